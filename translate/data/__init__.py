"""Data: folder layouts, the embedded synthetic set, augmentation and the resumable loader."""
from .folders import Layout, StreamSampler, TranslationDataset, detect_layout, make_loader, scan_images

__all__ = ["Layout", "StreamSampler", "TranslationDataset", "detect_layout", "make_loader", "scan_images"]
