"""Data sets from folders of images, the embedded synthetic set, and the resumable loader.

Layouts of ``--data DIR`` (checked in this order):

- ``DIR/trainA/`` + ``DIR/trainB/`` (optional ``testA/``, ``testB/``): two domains. CycleGAN draws
  B at random for each A, an epoch is max(|A|, |B|); pix2pix pairs them by file name.
- ``DIR/A/`` + ``DIR/B/``: paired by matching file names (extension may differ).
- ``DIR/train/`` (optional ``val/`` or ``test/``) or ``DIR`` itself holding side-by-side images:
  the pix2pix layout, A on the left half and B on the right.

Every sample is drawn from a seed fixed by (``--seed``, position in the stream), never from a
worker's random state, so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from ..images import is_image_file, load_rgb, resize
from .scan import scan_images
from .synthetic import render_pair
from .transforms import default_load_size, eval_transform, train_transform

log = logging.getLogger("translate.data")


def _first_dir(root: Path, *names: str) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


@dataclass
class Layout:
    kind: str  # "unpaired" | "paired" | "aligned" | "synthetic"
    root: Path | None
    train: tuple[Path, ...]  # folders: (A, B) or (AB,)
    test: tuple[Path, ...] | None

    @property
    def paired(self) -> bool:
        return self.kind != "unpaired"


def detect_layout(root: str | Path | None) -> Layout:
    if root is None:
        return Layout("synthetic", None, (), None)
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist; check the --data path (or leave --data out for the embedded data)")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; --data takes a folder (trainA/ + trainB/, A/ + B/, or train/)")
    has_a, has_b = (root / "trainA").is_dir(), (root / "trainB").is_dir()
    if has_a or has_b:
        if not has_b:
            raise DataError(f"{root / 'trainB'} is missing: unpaired data needs trainA/ and trainB/ side by side")
        if not has_a:
            raise DataError(f"{root / 'trainA'} is missing: unpaired data needs trainA/ and trainB/ side by side")
        test = (root / "testA", root / "testB") if (root / "testA").is_dir() and (root / "testB").is_dir() else None
        return Layout("unpaired", root, (root / "trainA", root / "trainB"), test)
    if (root / "A").is_dir() or (root / "B").is_dir():
        for side in ("A", "B"):
            if not (root / side).is_dir():
                raise DataError(f"{root / side} is missing: paired data needs A/ and B/ with matching file names")
        return Layout("paired", root, (root / "A", root / "B"), None)
    train = _first_dir(root, "train")
    if train is not None:
        test = _first_dir(root, "val", "test")
        return Layout("aligned", root, (train,), (test,) if test else None)
    if any(is_image_file(p) for p in root.iterdir()):
        return Layout("aligned", root, (root,), None)
    raise DataError(f"{root} has none of the known layouts: trainA/ + trainB/ (unpaired), A/ + B/ (paired by "
                    f"file name), or train/ with side-by-side AB images; arrange the images like one of these")


def match_pairs(a_files: list[Path], b_files: list[Path], a_dir: Path, b_dir: Path) -> list[tuple[Path, Path]]:
    """Pair files by name relative to their folder, ignoring the extension."""
    def key(p: Path, base: Path) -> str:
        return str(p.relative_to(base).with_suffix(""))

    b_by_key = {key(p, b_dir): p for p in b_files}
    pairs, missing = [], []
    for p in a_files:
        k = key(p, a_dir)
        (pairs.append((p, b_by_key.pop(k))) if k in b_by_key else missing.append(p.name))
    if missing or b_by_key:
        extra = sorted(p.name for p in b_by_key.values())
        detail = []
        if missing:
            detail.append(f"{len(missing)} file(s) in {a_dir} have no match in {b_dir} (e.g. {missing[0]})")
        if extra:
            detail.append(f"{len(extra)} file(s) in {b_dir} have no match in {a_dir} (e.g. {extra[0]})")
        raise DataError("; ".join(detail) + "; pairs are matched by file name, so rename or remove the odd ones")
    return pairs


def paired_files(a_dir: Path, b_dir: Path, **scan) -> tuple[list[Path], list[Path]]:
    """Files of A and B paired by name; a pair with an unreadable side is dropped (with a warning),
    so one bad file does not read as a missing partner."""
    bad: list[Path] = []
    good_a, good_b = scan_images(a_dir, bad_out=bad, **scan), scan_images(b_dir, bad_out=bad, **scan)
    pairs = match_pairs(sorted(good_a + [p for p in bad if p.is_relative_to(a_dir)]),
                        sorted(good_b + [p for p in bad if p.is_relative_to(b_dir)]), a_dir, b_dir)
    bad_set = set(bad)
    kept = [(a, b) for a, b in pairs if a not in bad_set and b not in bad_set]
    for a, b in pairs:
        if a in bad_set or b in bad_set:
            log.warning("skipping the pair %s / %s: %s is unreadable", a.name, b.name, (a if a in bad_set else b))
    return [a for a, _ in kept], [b for _, b in kept]


# --- decoding with skip-on-error ---------------------------------------------------------------
def _upscale_to(img: np.ndarray, min_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if min(h, w) >= min_side:
        return img
    scale = min_side / min(h, w)
    return resize(img, (max(min_side, round(h * scale)), max(min_side, round(w * scale))))


class _Decoder:
    """Loads images; a file that fails to decode is warned about once and replaced by another sample."""

    def __init__(self) -> None:
        self.warned: set[Path] = set()

    def load(self, path: Path, at_least: tuple[int, int] | None = None) -> np.ndarray | None:
        try:
            return load_rgb(path, at_least=at_least)
        except Exception as exc:  # noqa: BLE001
            if path not in self.warned:
                self.warned.add(path)
                log.warning("skipping %s: cannot decode it (%s); re-encode or remove the file", path, exc)
            return None


def _seed(transform, rng: np.random.Generator) -> None:
    """One random stream for all of a pipeline's ops, drawn from the sample's own generator.
    (``Compose.set_random_seed`` would give every op the same seed, tying the flip to the crop.)"""
    seed = int(rng.integers(2**63))
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


# --- data sets ---------------------------------------------------------------------------------
class TranslationDataset(Dataset):
    """Yields ``{"A": tensor, "B": tensor}`` in [-1, 1] for a key ``(index, sample_seed)``."""

    def __init__(self, layout: Layout, *, size: int, load_size: int | None, flip: bool = True,
                 unpaired: bool = False, synthetic_count: int = 200, seed: int = 0,
                 max_bad_fraction: float = 0.1, holdout: int = 0) -> None:
        self.layout = layout
        self.size = size
        self.unpaired = unpaired
        self.seed = seed
        self.decoder = _Decoder()
        self.min_side = size if load_size == 0 else 0  # upscale here only when nothing resizes
        self.synthetic_count = synthetic_count
        self.render_size = default_load_size(size) if load_size is None else (load_size or size)
        # a JPEG much larger than the load size decodes at a reduced scale (see images.load_rgb)
        self.at_least = None if load_size == 0 else (self.render_size, self.render_size)
        self.transform = train_transform(size, load_size, flip, paired=True)
        self.transform_single = train_transform(size, load_size, flip, paired=False)
        scan = dict(min_side=size, max_bad_fraction=max_bad_fraction)  # note images smaller than the crop
        self.files_A: list[Path] = []
        self.files_B: list[Path] = []
        if layout.kind == "unpaired" and unpaired:
            self.files_A, self.files_B = scan_images(layout.train[0], **scan), scan_images(layout.train[1], **scan)
        elif layout.kind in ("unpaired", "paired"):  # pix2pix on trainA/trainB, or A/ + B/: pair by name
            self.files_A, self.files_B = paired_files(*layout.train, **scan)
        elif layout.kind == "aligned":
            self.files_A = scan_images(layout.train[0], **scan)
        self.holdout = holdout
        self.validation = self._hold_out(holdout) if holdout > 0 else None

    def _hold_out(self, n: int):
        """Take the last ``n`` images by file name out of training: the ``val`` split."""
        from .validation import EvalImages, hold_out, pairs_or_unpaired, synthetic_split

        kind, source = self.layout.kind, str(self.layout.root)
        if kind == "synthetic":
            return synthetic_split("val", self.seed, self.synthetic_count, self.size, n)
        if kind == "aligned":
            self.files_A, held = hold_out(self.files_A, n, self.layout.train[0])
            return EvalImages(source, "val", "aligned", files_A=held)
        a_dir, b_dir = self.layout.train
        if self.unpaired:  # the same names on both sides when they have them (CycleGAN copies of paired sets)
            self.files_A, held_a = hold_out(self.files_A, n, a_dir)
            names = {p.relative_to(a_dir).with_suffix("") for p in held_a}
            held_b = [p for p in self.files_B if p.relative_to(b_dir).with_suffix("") in names]
            if len(held_b) == len(held_a):
                held_set = set(held_b)
                self.files_B = [p for p in self.files_B if p not in held_set]
            else:
                self.files_B, held_b = hold_out(self.files_B, n, b_dir)
            return pairs_or_unpaired(source, "val", held_a, held_b, a_dir, b_dir)
        keep_a, held_a = hold_out(self.files_A, n, a_dir)  # pairs: hold both sides of the last n out
        by_a = dict(zip(self.files_A, self.files_B))
        self.files_A, self.files_B = keep_a, [by_a[p] for p in keep_a]
        return EvalImages(source, "val", "pairs", files_A=held_a, files_B=[by_a[p] for p in held_a])

    def split(self, name: str):
        """The ``val`` or ``test`` images (:mod:`translate.data.validation`), or None if there are none."""
        from .validation import folder_split, synthetic_split

        if name == "val" and self.validation is not None:
            return self.validation
        if self.layout.kind == "synthetic":
            return synthetic_split(name, self.seed, self.synthetic_count, self.size)
        return folder_split(Path(self.layout.root), name)

    def __len__(self) -> int:
        """Samples per epoch: max(|A|, |B|) unpaired, else the number of pairs."""
        if self.layout.kind == "synthetic":
            return self.synthetic_count
        return max(len(self.files_A), len(self.files_B))

    def describe(self) -> str:
        if self.layout.kind == "synthetic":
            return f"embedded synthetic scenes: {self.synthetic_count} pairs (label map -> rendering)"
        if self.layout.kind == "unpaired":
            return f"{self.layout.root}: {len(self.files_A)} A + {len(self.files_B)} B images"
        return f"{self.layout.root}: {len(self)} pairs ({self.layout.kind})"

    # raw uint8 pairs ---------------------------------------------------------------------------
    def _raw_pair(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        kind = self.layout.kind
        if kind == "synthetic":
            return render_pair(self.render_size, self.seed, index)
        if kind == "aligned":
            ab = self.decoder.load(self.files_A[index], self.at_least and (2 * self.render_size, self.render_size))
            if ab is None:
                return None
            w = ab.shape[1] // 2
            if w == 0:
                return None
            return ab[:, :w], ab[:, w: 2 * w]
        a = self.decoder.load(self.files_A[index], self.at_least)
        b = self.decoder.load(self.files_B[index], self.at_least)
        if a is None or b is None:
            return None
        b = resize(b, a.shape[:2])
        return a, b

    def _raw_single(self, side: str, index: int) -> np.ndarray | None:
        if self.layout.kind in ("synthetic", "aligned"):
            pair = self._raw_pair(index)
            return None if pair is None else pair[0 if side == "A" else 1]
        files = self.files_A if side == "A" else self.files_B
        return self.decoder.load(files[index], self.at_least)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        index, sample_seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng([self.seed, sample_seed])
        n = len(self)
        for attempt in range(n):  # skip undecodable files, deterministically
            i = (index + attempt) % n
            if self.unpaired:
                nA = len(self.files_A) or n
                nB = len(self.files_B) or n
                a = self._raw_single("A", i % nA)
                b = self._raw_single("B", int(rng.integers(nB)))
                if a is None or b is None:
                    continue
                a, b = _upscale_to(a, self.min_side), _upscale_to(b, self.min_side)
                _seed(self.transform_single, rng)
                ta = self.transform_single(image=a)["image"]
                tb = self.transform_single(image=b)["image"]
                return {"A": ta, "B": tb}
            pair = self._raw_pair(i)
            if pair is None:
                continue
            a, b = _upscale_to(pair[0], self.min_side), _upscale_to(pair[1], self.min_side)
            _seed(self.transform, rng)
            out = self.transform(image=a, target=b)
            return {"A": out["image"], "B": out["target"]}
        raise DataError(f"no image in {self.layout.root} could be decoded; check the files")

    # fixed images for sample grids -------------------------------------------------------------
    def sample_batch(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` fixed images (from the test split when there is one), resized, no augmentation."""
        tf = eval_transform(self.size, paired=True)
        single = eval_transform(self.size)
        kind = self.layout.kind
        A, B = [], []
        if self.validation is not None and kind != "synthetic":  # the held-out images
            val = self.validation
            for i in range(min(n, len(val))):
                a, b = val.load(i, "A"), val.load(i, "B")
                if a is None or b is None:
                    continue
                A.append(single(image=a)["image"]), B.append(single(image=b)["image"])
        elif kind == "synthetic":
            for i in range(n):  # indices past the training set: held out
                a, b = render_pair(self.size, self.seed, self.synthetic_count + i)
                out = tf(image=a, target=b)
                A.append(out["image"]), B.append(out["target"])
        elif kind == "unpaired" and self.layout.test is None or kind == "paired":
            for i in range(min(n, len(self.files_A), len(self.files_B))):
                a = self._raw_single("A", i)
                b = self._raw_single("B", i)
                if a is None or b is None:
                    continue
                A.append(single(image=a)["image"]), B.append(single(image=b)["image"])
        elif kind == "unpaired":
            scan = dict(max_bad_fraction=1.0)
            ta = scan_images(self.layout.test[0], **scan)[:n]
            tb = scan_images(self.layout.test[1], **scan)[:n]
            for pa, pb in zip(ta, tb):
                a, b = self.decoder.load(pa), self.decoder.load(pb)
                if a is None or b is None:
                    continue
                A.append(single(image=a)["image"]), B.append(single(image=b)["image"])
        else:  # aligned
            files = scan_images(self.layout.test[0], max_bad_fraction=1.0) if self.layout.test else self.files_A
            for path in files[:n]:
                ab = self.decoder.load(path)
                if ab is None:
                    continue
                w = ab.shape[1] // 2
                out = tf(image=ab[:, :w], target=np.ascontiguousarray(ab[:, w: 2 * w]))
                A.append(out["image"]), B.append(out["target"])
        if not A:
            raise DataError(f"could not decode any image for the sample grid from {self.layout.root}")
        return {"A": torch.stack(A), "B": torch.stack(B)}


# --- the resumable stream ----------------------------------------------------------------------
class StreamSampler(Sampler):
    """An endless stream of ``(index, sample_seed)``: a fresh permutation each epoch, starting at
    position ``start`` so a resumed run continues the same stream.

    With ``world`` > 1 ranks this is the stream's share of one rank, in the role of PyTorch's
    ``DistributedSampler`` (which cannot start mid-epoch): the stream is cut into global batches of
    ``batch * world`` samples and rank ``r`` takes the ``r``-th ``batch`` of each. Every rank draws
    the same permutations, so the shares are disjoint, and a sample's seed is its global position,
    so its crop and flip are those one process with the whole global batch would make."""

    def __init__(self, n: int, seed: int, start: int = 0, *, batch: int = 1, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.n, self.seed, self.start = n, seed, start
        self.batch, self.rank, self.world = batch, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        first = self.start  # global position of the next global batch
        epoch, perm = -1, None
        while True:
            for pos in range(first + self.rank * self.batch, first + (self.rank + 1) * self.batch):
                e = pos // self.n
                if e != epoch:
                    epoch = e
                    g = torch.Generator().manual_seed(self.seed * 100_003 + e)
                    perm = torch.randperm(self.n, generator=g).tolist()
                yield perm[pos % self.n], pos
            first += self.batch * self.world


def default_workers(processes: int = 1) -> int:
    """Loader workers per training process: the cores left after one per training process
    (``processes`` of them on this machine, under torchrun), shared out, at most 8 each."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, (cpus - processes) // processes))


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT and SIGTERM to the training process. Ctrl-C in a terminal, SLURM
    and ``kill -- -PGID`` signal the whole process group; the training process then finishes its
    step, checkpoints and shuts its workers down itself. A worker killed by the signal first would
    make the loader raise in the middle of that step, and the checkpoint would be lost."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: TranslationDataset, *, batch_size: int, seed: int, start: int, workers: int,
                pin_memory: bool, rank: int = 0, world: int = 1, local_processes: int = 1) -> DataLoader:
    """Batches from position ``start`` (in samples, over all ranks) of the stream; with ``world``
    ranks, this rank's share of each global batch (see :class:`StreamSampler`). The loader's own
    generator keeps it from touching the global torch RNG, which belongs to the training step."""
    workers = default_workers(local_processes) if workers < 0 else workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=StreamSampler(len(dataset), seed, start, batch=batch_size, rank=rank, world=world),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_ignore_stop_signals if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


# --- images for the noise-to-image families ------------------------------------------------------
def _resize_uint8(x: np.ndarray, size: int) -> np.ndarray:
    """NHWC uint8 images to ``size`` x ``size`` (bilinear with antialiasing), in chunks."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    from torch.nn import functional as F

    out = []
    for i in range(0, len(x), 1024):
        t = torch.from_numpy(np.ascontiguousarray(x[i: i + 1024])).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def _channels(img: np.ndarray, channels: int) -> np.ndarray:
    """HWC (or NHWC) uint8 with 1 or 3 channels to ``channels``."""
    c = img.shape[-1]
    if c == channels:
        return img
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    grey = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma
    return np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None]


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then resize (bicubic) to ``size``."""
    h, w = img.shape[:2]
    s = min(h, w)
    return resize(img[(h - s) // 2: (h - s) // 2 + s, (w - s) // 2: (w - s) // 2 + s], size)


class GenerationDataset(Dataset):
    """Real images for a noise-to-image GAN: ``{"image": (C, size, size) in [-1, 1], "label": int64}``
    for a key ``(index, sample_seed)`` (label -1 when unlabelled). Arrays are resized once up front;
    files are decoded, centre-cropped and resized per sample (unreadable ones skipped)."""

    def __init__(self, images, *, size: int, channels: int, flip: bool = False, seed: int = 0,
                 held_out=None) -> None:
        self.set = images
        self.size, self.channels, self.flip, self.seed = size, channels, flip, seed
        self.held_out = held_out
        self.decoder = _Decoder()
        self.array = None if images.images is None else _channels(_resize_uint8(images.images, size), channels)

    def __len__(self) -> int:
        return len(self.set)

    def describe(self) -> str:
        return self.set.describe()

    def _load(self, i: int) -> np.ndarray | None:
        """Image ``i`` as uint8 HWC at the training size and channels (None: undecodable)."""
        if self.array is not None:
            return self.array[i]
        img = self.decoder.load(self.set.files[i], (self.size, self.size))
        return None if img is None else _channels(_square(img, self.size), self.channels)

    def _label(self, i: int) -> int:
        return int(self.set.labels[i]) if self.set.labels is not None else -1

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        from ..images import to_float

        index, sample_seed = key if isinstance(key, tuple) else (key, key)
        n = len(self)
        for attempt in range(n):
            i = (index + attempt) % n
            img = self._load(i)
            if img is None:
                continue
            if self.flip and np.random.default_rng([self.seed, sample_seed]).random() < 0.5:
                img = img[:, ::-1]
            return {"image": torch.from_numpy(to_float(img)), "label": torch.tensor(self._label(i))}
        raise DataError(f"no image in {self.set.source} could be decoded; check the files")

    def sample_batch(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` fixed real images spread evenly over the held-out set (the training set when there is
        none), for the sample grids and the mode-collapse check."""
        from ..images import to_float

        source = self
        if self.held_out is not None and len(self.held_out):
            source = GenerationDataset(self.held_out, size=self.size, channels=self.channels)
        order = np.unique(np.linspace(0, len(source) - 1, num=min(len(source), 4 * n)).round().astype(int))
        order = np.concatenate([order[::4], np.setdiff1d(order, order[::4])])  # n evenly spaced first
        images, labels = [], []
        for i in order:
            if len(images) == n:
                break
            img = source._load(i)
            if img is not None:
                images.append(torch.from_numpy(to_float(img)))
                labels.append(source._label(i))
        if not images:
            raise DataError(f"could not decode any image of {self.set.source} for the sample grid")
        return {"image": torch.stack(images), "label": torch.tensor(labels)}
