"""Data: named data sets (registry, download), folder layouts, the embedded synthetic set,
augmentation and the resumable loader.

The folder/loader names are imported lazily: ``translate data ...`` and the registry work without
loading torch.
"""
from __future__ import annotations

from typing import Any

ROOT_ENV = "TRANSLATE_DATA"  # where named data sets live
MIRROR_ENV = "TRANSLATE_DATASETS_MIRROR"  # a mirror of their archives

_FOLDERS = ("Layout", "StreamSampler", "TranslationDataset", "detect_layout", "make_loader")
__all__ = [*_FOLDERS, "scan_images"]


def __getattr__(name: str) -> Any:
    if name in _FOLDERS:
        from . import folders

        return getattr(folders, name)
    if name == "scan_images":
        from .scan import scan_images

        return scan_images
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
