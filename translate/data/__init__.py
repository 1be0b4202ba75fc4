"""Data: named data sets (registry, download), folder layouts, the embedded synthetic set,
augmentation and the resumable loader.

The folder/loader names are imported lazily: ``translate data ...`` and the registry work without
loading torch.
"""
from __future__ import annotations

from typing import Any

ROOT_ENV = "TRANSLATE_DATA"  # where named data sets live
MIRROR_ENV = "TRANSLATE_DATASETS_MIRROR"  # a mirror of their archives

_FOLDERS = ("Layout", "StreamSampler", "TranslationDataset", "detect_layout", "make_loader", "scan_images")
__all__ = list(_FOLDERS)


def __getattr__(name: str) -> Any:
    if name in _FOLDERS:
        from . import folders

        return getattr(folders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
