"""albumentations pipelines: resize, random crop, horizontal flip, normalise to [-1, 1].

Pairs share one random draw (``additional_targets``), so the crop and flip of an input and its
target always match.
"""
from __future__ import annotations

import albumentations as A
from albumentations.pytorch import ToTensorV2

from ..images import MEAN, STD


def default_load_size(size: int) -> int:
    """The reference resizes to 286 before a 256 random crop; keep that ratio, rounded to even."""
    return int(round(size * 286 / 256 / 2)) * 2


def _normalise() -> list[A.BasicTransform]:
    return [A.Normalize(mean=(MEAN,) * 3, std=(STD,) * 3, max_pixel_value=255.0), ToTensorV2()]


def train_transform(size: int, load_size: int | None, flip: bool = True, paired: bool = False) -> A.Compose:
    """Resize to ``load_size`` (0: keep), random ``size`` crop, optional flip, to a tensor in [-1, 1]."""
    load = default_load_size(size) if load_size is None else load_size
    ops: list[A.BasicTransform] = []
    if load:
        ops.append(A.Resize(load, load, interpolation=3))  # bicubic, as the reference
    ops.append(A.RandomCrop(size, size))
    if flip:
        ops.append(A.HorizontalFlip(p=0.5))
    return A.Compose(ops + _normalise(), additional_targets={"target": "image"} if paired else None)


def eval_transform(size: int, paired: bool = False) -> A.Compose:
    """Deterministic: resize to ``size`` x ``size``, to a tensor in [-1, 1] (for sample grids)."""
    return A.Compose([A.Resize(size, size, interpolation=3), *_normalise()],
                     additional_targets={"target": "image"} if paired else None)
