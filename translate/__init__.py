"""translate: image-to-image translation with GANs (CycleGAN, pix2pix and friends)."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

__version__ = "0.1.0"

from .errors import TranslateError  # noqa: E402

__all__ = ["__version__", "TranslateError", "Translator"]


def __getattr__(name: str):
    if name == "Translator":  # lazily: serving needs onnxruntime, NumPy and Pillow only, never torch
        from .runtime import Translator

        return Translator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
