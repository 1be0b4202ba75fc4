"""The project's own MNIST digit classifier: an independent judge of generated digits.

A GAN's own discriminator cannot say whether its samples look like digits (it is trained to be
fooled), and the Inception network behind the usual FID has never seen a handwritten digit. So the
digit scores of :mod:`translate.metrics` use this small CNN instead: its predictions say *which*
digit a sample looks like (conditioning accuracy, class spread / mode collapse) and its 128-d
penultimate activations are the features of a Frechet distance between fake and real digits.

It is trained only on the training split of the data (:func:`translate.data.arrays.split`: the
source's own test split, else the last 10 % of each class), never on generator output, and its
accuracy on the held-out digits is measured and kept with it, so a score is only ever as trusted as
that number. :func:`digit_classifier` trains it once per data source and caches it as safetensors
under ``$TRANSLATE_CACHE`` (default ``~/.cache/translate``), keyed by the source's content.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import CheckpointError, DataError
from .fileio import CACHE_ENV, atomic_path, cache_dir  # noqa: F401 - CACHE_ENV re-exported
from .images import to_float

log = logging.getLogger("translate.metrics")

CLASSIFIER_VERSION = "1"  # bump when the network, its training or its preprocessing changes: old caches retrain
SIDE = 28
N_DIGITS = 10
FORMAT = "translate-digit-classifier"
WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.1
# One thread trains the same classifier on every machine (float sums are ordered by thread, so two
# threads give other weights and another held-out accuracy) and never fights other work for the
# cores: on a 2-core machine busy with other work, two threads ran a training step 3.4x slower than one.
# (What a second thread saves on an idle machine was not measured.)
TRAIN_THREADS = 1


class DigitClassifier(nn.Module):
    """Three 3x3 conv layers (16, 64, 64 channels, each with BN and ReLU; 2x2 max-pools after the first
    two), a 128-d feature layer, dropout, logits: about 0.5 M parameters, 4 M multiply-adds per digit.

    Takes network images (float NCHW in [-1, 1]) of any size and channel count: colour is averaged to
    gray and the image resized to 28x28 (bilinear, antialiased) here, so generators of any output
    size can be judged without the caller preparing their samples.
    """

    def __init__(self, n_classes: int = N_DIGITS) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.body = nn.Sequential(
            # pooling before BN and ReLU: the same network when BN's scale is positive, a quarter of their cost.
            # 16 channels at full size and a third conv at 7x7 beat the textbook 32/64 pair at the same cost
            # (98.6-98.8 % against 97.8-98.6 % held-out on the MNIST sample, four seeds each).
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 64, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(64 * (SIDE // 4) ** 2, 128), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(128, n_classes)

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """Any NCHW float image to the (N, 1, 28, 28) the network sees."""
        if x.ndim != 4:
            raise ValueError(f"expected NCHW images, got shape {tuple(x.shape)}")
        x = x.float()
        if x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (SIDE, SIDE):
            x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 128): the features of the digit Frechet distance."""
        return self.body(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


# --- training ----------------------------------------------------------------------------------
def cpu_threads() -> int:
    """Intra-op threads for running (not training) this small network: the CPUs this process may use
    (torch may count the whole machine in a container) less those other work keeps busy (the 1-minute
    load average, which also counts this process's own work of the last minute: at worst one thread
    too few).

    On a shared machine this matters more than it looks: with every core busy, two threads that
    wait on each other ran a training step 3.4x slower than one thread did (2 cores, measured)."""
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Unix
        busy = 0.0
    from .runtime import cpu_count

    cpus = cpu_count()
    return max(1, min(torch.get_num_threads(), cpus, round(cpus - busy)))


@contextlib.contextmanager
def _threads(n: int | None = None) -> Iterator[None]:
    """``n`` (default :func:`cpu_threads`) intra-op threads for the duration, restored afterwards
    because the setting is process-wide."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or cpu_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prepared(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC (any channels, any size) to the (N, 1, 28, 28) float input, in chunks to bound memory."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 NHWC images, got {images.dtype} {tuple(images.shape)}")
    chunks = [DigitClassifier.prepare(torch.from_numpy(to_float(images[i:i + 2048])))
              for i in range(0, len(images), 2048)]
    return torch.cat(chunks) if chunks else torch.empty(0, 1, SIDE, SIDE)


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image moved by its own random offset of up to ``max_shift`` px each way (edges replicated)."""
    n, c, h, w = x.shape
    pw = w + 2 * max_shift
    padded = F.pad(x, (max_shift,) * 4, mode="replicate").reshape(n, c, -1)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    window = (torch.arange(h)[:, None] * pw + torch.arange(w)).reshape(1, -1)  # the unshifted crop, flat
    index = (window + (dy * pw + dx)[:, None]).unsqueeze(1).expand(n, c, h * w)
    return padded.gather(2, index).reshape(n, c, h, w)  # a gather: far cheaper than 3-D advanced indexing


def train_classifier(images: np.ndarray, labels: np.ndarray, *, epochs: int = 10, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0, augment: bool = True) -> DigitClassifier:
    """A :class:`DigitClassifier` trained on uint8 NHWC ``images`` with int ``labels`` (0 .. n-1), on the CPU.

    AdamW (weight decay 0.05) with a one-cycle learning-rate schedule and label smoothing 0.1, since
    4500 digits (the MNIST sample's training split) are few for 0.45 M weights. With ``augment`` each
    image is shifted by up to 2 px (handwriting is not centred as carefully as MNIST's, nor are
    generated digits). The defaults take about 30 s for those 4500 digits (one thread, on a busy
    2-core machine).

    Deterministic for a given ``seed``: one thread (:data:`TRAIN_THREADS`), and the weights, the
    dropout and the shuffling draw from a forked RNG seeded with it, so the caller's global torch RNG
    is left as it was. Returned in eval mode.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need one label per image, got {len(images)} images and {len(labels)} labels")
    x = _prepared(images)
    y = torch.from_numpy(labels)
    n_classes = int(labels.max()) + 1
    steps_per_epoch = -(-len(x) // batch_size)
    with _threads(TRAIN_THREADS), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = DigitClassifier(n_classes).to(memory_format=torch.channels_last)  # 2x faster on CPUs (measured)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch),
                                                    pct_start=0.2)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = order[i:i + batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                    continue
                xb = _shift(x[idx], gen) if augment else x[idx]
                loss = F.cross_entropy(net(xb), y[idx], label_smoothing=LABEL_SMOOTHING)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net.eval()


@torch.no_grad()
def predict(net: DigitClassifier, images, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, classes), features (N, 128)) of float NCHW images in [-1, 1] (NumPy or torch), in eval mode."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images, dtype=np.float32))
    logits, feats = [], []
    try:
        with _threads():
            for i in range(0, len(x), batch_size):
                f = net.features(x[i:i + batch_size].to(device))
                feats.append(f.float().cpu().numpy())
                logits.append(net.head(f).float().cpu().numpy())
    finally:
        net.train(was_training)
    if not logits:
        return np.zeros((0, net.n_classes), np.float32), np.zeros((0, 128), np.float32)
    return np.concatenate(logits), np.concatenate(feats)


def accuracy(net: DigitClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of uint8 NHWC ``images`` classified as their ``labels``."""
    logits, _ = predict(net, to_float(np.asarray(images)))
    return float(np.mean(logits.argmax(1) == np.asarray(labels)))


# --- files -------------------------------------------------------------------------------------
def save_classifier(net: DigitClassifier, path: str | Path, meta: dict[str, str]) -> Path:
    """Write the weights and ``meta`` (strings: classes, accuracy, training source, ...) as one
    safetensors file, atomically, so a cache never holds half a classifier."""
    from safetensors.torch import save_file

    meta = {str(k): str(v) for k, v in meta.items()}
    meta.setdefault("format", FORMAT)
    meta.setdefault("version", CLASSIFIER_VERSION)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_classifier(path: str | Path) -> tuple[DigitClassifier, dict[str, str]]:
    """(classifier in eval mode, its metadata) from a file :func:`save_classifier` wrote. Reads
    safetensors only, so a file from elsewhere can hold tensors but never code."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); delete it to retrain") from None
    if meta.get("format") != FORMAT or "head.weight" not in tensors:
        raise CheckpointError(f"{path} is not a digit classifier saved by translate; delete it to retrain")
    net = DigitClassifier(int(tensors["head.weight"].shape[0]))
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this version's digit classifier ({exc}); delete it to retrain"
                              ) from None
    return net.eval(), meta


# --- the cached classifier of a data source ----------------------------------------------------
def default_cache_dir() -> Path:
    return cache_dir()


def source_fingerprint(source: Path) -> tuple[str, str | None]:
    """(fingerprint, sha256 of the file or None for a folder). A file is known by its content; a
    folder by its sorted file list and sizes (hashing every image would cost more than it saves)."""
    if source.is_file():
        from .data.download import sha256_file

        digest = sha256_file(source)
        return f"file:{digest}", digest
    listing = sorted((p.relative_to(source).as_posix(), p.stat().st_size) for p in source.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
    return "folder:" + json.dumps(listing), None


def cache_key(fingerprint: str) -> str:
    return hashlib.sha256(f"{CLASSIFIER_VERSION}\n{fingerprint}".encode()).hexdigest()[:16]


def _pixels(image_set) -> np.ndarray:
    """uint8 NHWC pixels of an image set; files are decoded, made gray (the channel mean, as
    :meth:`DigitClassifier.prepare` does) and resized to 28x28 (folders of digits may mix sizes, and the
    network sees 28x28 gray anyway)."""
    if image_set.images is not None:
        return image_set.images
    from PIL import Image

    from .images import load_rgb

    out = np.empty((len(image_set.files), SIDE, SIDE, 1), np.uint8)
    for i, p in enumerate(image_set.files):
        try:
            gray = Image.fromarray((load_rgb(p).astype(np.float32).mean(-1) + 0.5).astype(np.uint8))
        except (OSError, ValueError) as exc:
            raise DataError(f"{p} is not a readable image ({exc}); remove or re-encode it") from None
        out[i, ..., 0] = np.asarray(gray.resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=None))
    return out


def digit_classifier(train_source: str | Path, *, cache_dir: str | Path | None = None,
                     quiet: bool = False) -> tuple[DigitClassifier, dict[str, str]]:
    """(classifier, metadata) for a labelled 10-class source: loaded from the cache, else trained on
    the source's training split, scored on its held-out split and cached.

    The metadata (all strings, as safetensors stores them) holds ``classes`` (JSON list),
    ``heldout_accuracy``, ``heldout_count``, ``train_count``, ``train_source``, ``train_sha256`` (files
    only), ``key`` and ``version``. ``quiet`` logs at DEBUG instead of INFO.
    """
    from .data.arrays import load_image_set, split

    source = Path(train_source)
    if not source.exists():
        load_image_set(source)  # raises the loader's own "does not exist" error
    fingerprint, digest = source_fingerprint(source)
    key = cache_key(fingerprint)
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"digit-classifier-{key}.safetensors"
    level = logging.DEBUG if quiet else logging.INFO
    if path.is_file():
        try:
            net, meta = load_classifier(path)
        except CheckpointError as exc:
            log.warning("retraining the digit classifier: %s", exc)
        else:
            if meta.get("version") == CLASSIFIER_VERSION and meta.get("key") == key:
                log.log(level, "digit classifier %s (held-out accuracy %s)", path, meta.get("heldout_accuracy"))
                return net, meta
    data = load_image_set(source)  # only now: a cache hit needs no decoding (the cache implies good labels)
    if not data.labelled or len(data.classes) != N_DIGITS:
        found = f"{len(data.classes)} classes" if data.labelled else "no labels"
        raise DataError(f"{source}: the digit classifier needs images labelled with the 10 digit classes (an .npz "
                        f"with x and y, MNIST IDX files, or a folder of 10 class folders); found {found}")
    train, held = split(data)
    if len(held) == 0 or len(np.unique(train.labels)) != N_DIGITS:
        raise DataError(f"{source}: the digit classifier needs training and held-out digits of every class; "
                        f"add more images per class")
    log.log(level, "training the digit classifier on %d digits of %s (once; cached in %s)", len(train), source,
            path.parent)
    start = time.perf_counter()
    net = train_classifier(_pixels(train), train.labels)
    seconds = time.perf_counter() - start
    held_acc = accuracy(net, _pixels(held), held.labels)
    log.log(level, "digit classifier: held-out accuracy %.4f on %d digits (trained in %.0f s)", held_acc, len(held),
            seconds)
    meta = {"classes": json.dumps(list(data.classes)), "heldout_accuracy": f"{held_acc:.6f}",
            "heldout_count": str(len(held)), "train_count": str(len(train)), "train_source": str(source),
            "train_seconds": f"{seconds:.1f}", "key": key, "version": CLASSIFIER_VERSION, "format": FORMAT}
    if digest:
        meta["train_sha256"] = digest
    save_classifier(net, path, meta)
    return net, meta
