"""translate: image-to-image translation with GANs (CycleGAN, pix2pix and friends)."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

__version__ = "0.1.0"

from .errors import TranslateError  # noqa: E402

__all__ = ["__version__", "TranslateError"]
