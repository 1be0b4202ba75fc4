"""Validation and test images of a translation data set, for ``translate eval``, ``--eval-every``
and the report's gallery.

- ``val``: the images a run held out of training with ``--holdout N`` (the last N by file name,
  numbers in numeric order: ``361.jpg`` ... ``400.jpg``), else the data's ``val/`` folder; the
  embedded synthetic set renders scenes past its training indices.
- ``test``: the data's ``test/`` (side-by-side AB) or ``testA/`` + ``testB/`` folders.

An image's ground truth is the other half of its pair: side-by-side AB images, ``A/`` + ``B/``
folders, and ``trainA/`` + ``trainB/`` (or ``testA/`` + ``testB/``) images with equal names, as in
the CycleGAN copies of paired sets (facades, maps, cityscapes). Without equal names an unpaired
split has no ground truth and scores by FID / KID only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

SPLITS = ("val", "test")
SYNTHETIC_VAL = 40  # rendered validation scenes of the embedded set
SYNTHETIC_TEST_OFFSET = 100_000  # test scenes are rendered from indices far past the validation ones


def natural_key(path: Path) -> list:
    """Sort key of a file name with its numbers compared as numbers: ``2.jpg`` before ``10.jpg``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).with_suffix("").as_posix())]


def hold_out(files: list[Path], n: int, base: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(kept, held out): the last ``n`` of ``files`` by :func:`natural_key` (relative to ``base``)
    are held out; the kept files keep their order."""
    if n <= 0:
        return list(files), []
    if n >= len(files):
        raise DataError(f"--holdout {n} would leave no training images (there are {len(files)}"
                        f"{' in ' + str(base) if base else ''}); hold out fewer")
    rel = (lambda p: p.relative_to(base)) if base is not None else (lambda p: Path(p.name))
    held = sorted(files, key=lambda p: natural_key(rel(p)))[-n:]
    held_set = set(held)
    return [p for p in files if p not in held_set], held


@dataclass
class EvalImages:
    """The images of one split: for each, a name and a way to load its A and B sides (uint8 HWC).

    ``kind``: ``aligned`` (one side-by-side AB file per image), ``pairs`` (A and B files, B the
    ground truth of A), ``unpaired`` (A and B files without a correspondence) or ``synthetic``.
    """

    source: str
    split: str
    kind: str
    files_A: list[Path] = field(default_factory=list)
    files_B: list[Path] = field(default_factory=list)
    seed: int = 0
    first_index: int = 0  # synthetic: the first rendered index
    count: int = 0  # synthetic: how many
    render_size: int = 256  # synthetic: rendered at this size

    @property
    def paired(self) -> bool:
        """Whether B is the ground truth of A, image by image."""
        return self.kind in ("aligned", "pairs", "synthetic")

    def __len__(self) -> int:
        if self.kind == "synthetic":
            return self.count
        return max(len(self.files_A), len(self.files_B))

    def count_of(self, side: str) -> int:
        if self.kind == "unpaired":
            return len(self.files_A if side == "A" else self.files_B)
        return len(self)

    def name(self, i: int, side: str = "A") -> str:
        if self.kind == "synthetic":
            return f"scene-{self.first_index + i:06d}"
        files = self.files_B if side == "B" and self.kind == "unpaired" else self.files_A
        return files[i].stem

    def load(self, i: int, side: str) -> np.ndarray | None:
        """uint8 HWC of image ``i``'s ``side`` ("A" or "B"); None if it cannot be decoded."""
        from ..images import load_rgb
        from .synthetic import render_pair

        if self.kind == "synthetic":
            pair = render_pair(self.render_size, self.seed, self.first_index + i)
            return pair[0 if side == "A" else 1]
        try:
            if self.kind == "aligned":
                ab = load_rgb(self.files_A[i])
                w = ab.shape[1] // 2
                if w == 0:
                    return None
                return np.ascontiguousarray(ab[:, :w] if side == "A" else ab[:, w: 2 * w])
            return load_rgb((self.files_A if side == "A" else self.files_B)[i])
        except (OSError, ValueError):
            return None

    def describe(self, count: int | None = None) -> str:
        truth = "with ground truth" if self.paired else "without ground truth (FID / KID only)"
        return f"{len(self) if count is None else count} {self.split} images of {self.source}, {truth}"


def synthetic_split(split: str, seed: int, synthetic_count: int, size: int, count: int | None = None) -> EvalImages:
    """Scenes of the embedded set past the training indices (``val``), or far past them (``test``)."""
    first = synthetic_count if split == "val" else SYNTHETIC_TEST_OFFSET
    return EvalImages("the embedded synthetic scenes", split, "synthetic", seed=seed, first_index=first,
                      count=count or SYNTHETIC_VAL, render_size=size)


def folder_split(root: Path, split: str) -> EvalImages | None:
    """The data's own ``val/`` / ``test/`` (side-by-side) or ``testA/`` + ``testB/`` folders, or None."""
    from .scan import scan_images

    scan = dict(max_bad_fraction=1.0)
    if split == "test" and (root / "testA").is_dir() and (root / "testB").is_dir():
        a, b = scan_images(root / "testA", **scan), scan_images(root / "testB", **scan)
        return pairs_or_unpaired(str(root), split, a, b, root / "testA", root / "testB")
    folder = root / split
    # side-by-side val/ and test/ sit beside train/; without train/ the root is the training folder,
    # and its subfolders were trained on
    if folder.is_dir() and (root / "train").is_dir() and not (root / "trainA").is_dir():
        files = sorted(scan_images(folder, **scan), key=lambda p: natural_key(p.relative_to(folder)))
        return EvalImages(str(folder), split, "aligned", files_A=files)
    return None


def pairs_or_unpaired(source: str, split: str, a: list[Path], b: list[Path], a_dir: Path, b_dir: Path) -> EvalImages:
    """A split of A and B files: paired by name when every name has its partner, else unpaired."""
    def key(p: Path, base: Path) -> str:
        return p.relative_to(base).with_suffix("").as_posix()

    b_by = {key(p, b_dir): p for p in b}
    if a and len(a) == len(b) and all(key(p, a_dir) in b_by for p in a):
        a = sorted(a, key=lambda p: natural_key(p.relative_to(a_dir)))
        return EvalImages(source, split, "pairs", files_A=a, files_B=[b_by[key(p, a_dir)] for p in a])
    return EvalImages(source, split, "unpaired", files_A=sorted(a, key=lambda p: natural_key(p.relative_to(a_dir))),
                      files_B=sorted(b, key=lambda p: natural_key(p.relative_to(b_dir))))
