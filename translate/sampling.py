"""``translate sample``: images from a noise-to-image generator (a run, or its exported ONNX file).

Latents, labels and noise seeds are drawn here with NumPy from ``--seed``, so a run directory and
the .onnx exported from it give the same images for the same seed (the generator's noise layers
run in their seeded mode, see ``nn.layers.SeededNoise``). This module imports torch only for the
run-directory backend: sampling from an .onnx file needs onnxruntime alone.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import ConfigError
from .fileio import atomic_path

_MAX_SEED = 2**31 - 1


def draw_latents(n: int, dim: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """z ~ N(0, I) as float32; ``spherical``: on the sphere of radius sqrt(dim), as in training."""
    z = rng.standard_normal((n, dim))
    if kind == "spherical":
        z *= math.sqrt(dim) / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)
    return z.astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical interpolation: along the great circle from ``a`` to ``b``, the norm moving linearly
    from |a| to |b|. A straight line between two Gaussian latents passes near the origin, where
    the generator saw almost no training latents (White 2016); the arc stays where they were."""
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua, ub = a / max(na, 1e-12), b / max(nb, 1e-12)
    omega = math.acos(float(np.clip(ua @ ub, -1.0, 1.0)))
    if omega < 1e-6:  # the same direction: nothing to bend
        direction = (1 - t) * ua + t * ub
    else:
        direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / math.sin(omega)
    return (direction * ((1 - t) * na + t * nb)).astype(np.float32)


@dataclass
class Generator:
    """A sampling backend: ``fn(latent, label | None, noise_seed) -> float32 NCHW in [-1, 1]``."""

    fn: Callable[[np.ndarray, np.ndarray | None, np.ndarray], np.ndarray]
    latent_dim: int
    latent: str
    classes: list[str]
    channels: int
    source: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_index(self, value: str) -> int:
        """``--class``: an index or a class name."""
        if not self.classes:
            raise ConfigError(f"{self.source} is unconditional; --class needs a class-conditional (cgan) model")
        if value in self.classes:
            return self.classes.index(value)
        try:
            k = int(value)
        except ValueError:
            k = -1
        if not 0 <= k < self.n_classes:
            raise ConfigError(f"--class {value!r} is not a class of {self.source}; give 0-{self.n_classes - 1} or one "
                              f"of: {', '.join(self.classes[:20])}")
        return k

    def __call__(self, latent: np.ndarray, label: np.ndarray | None, seeds: np.ndarray,
                 batch_size: int = 256) -> np.ndarray:
        out = []
        for i in range(0, len(latent), batch_size):
            lab = None if label is None else label[i: i + batch_size]
            out.append(self.fn(latent[i: i + batch_size], lab, seeds[i: i + batch_size]))
        return np.concatenate(out)


def from_run(source: str | Path) -> Generator:
    """The generator of a run or checkpoint folder (EMA weights when kept), on the CPU."""
    from .run import load_generator

    g = load_generator(source)
    if not g.family.generative:
        raise ConfigError(f"{g.checkpoint.path} is a {g.cfg.train.model} run, which translates images; 'translate "
                          f"run' translates a folder with it. 'translate sample' is for noise-to-image runs "
                          f"(dcgan, cgan)")
    n_classes = int(getattr(g.cfg.model, "n_classes", 0))
    return from_net(g.net, g.cfg.model, g.checkpoint.classes(n_classes) if n_classes else [], str(g.run_dir))


def from_net(net, model_cfg, classes: list[str], source: str) -> Generator:
    """A torch dcgan / cgan generator (``model_cfg`` its DCGANConfig / CGANConfig) as a
    :class:`Generator`; it runs on the network's device and returns NumPy."""
    import torch

    from .nn.layers import seeded_noise

    device = next(net.parameters()).device

    def fn(latent: np.ndarray, label: np.ndarray | None, seeds: np.ndarray) -> np.ndarray:
        with seeded_noise(net, True, torch.from_numpy(seeds).to(device)), torch.no_grad():
            y = None if label is None else torch.from_numpy(label).to(device)
            return net(torch.from_numpy(latent).to(device), y).float().cpu().numpy()

    return Generator(fn, model_cfg.latent_dim, model_cfg.latent, classes, net.channels, source)


def from_onnx(path: str | Path, provider: str = "auto") -> Generator:
    """An exported generator (``translate export`` of a dcgan / cgan run), on onnxruntime."""
    from .runtime import create_session, session_metadata

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; export a run with 'translate export RUN_DIR'")
    sess, _ = create_session(path, provider=provider)
    meta = session_metadata(sess)
    names = [i.name for i in sess.get_inputs()]
    if "latent" not in names:
        raise ConfigError(f"{path} is an image translator ({meta.get('family', 'unknown family')}); "
                          f"'translate run' translates images with it. 'translate sample' needs a dcgan / cgan export")
    dim = int(sess.get_inputs()[0].shape[1])

    def fn(latent: np.ndarray, label: np.ndarray | None, seeds: np.ndarray) -> np.ndarray:
        feed = {"latent": latent}
        if "label" in names:
            feed["label"] = label
        if "noise_seed" in names:
            feed["noise_seed"] = seeds
        return sess.run(["output"], feed)[0].astype(np.float32)

    classes = json.loads(meta.get("classes", "[]")) if "label" in names else []
    if "label" in names and not classes:
        classes = [str(i) for i in range(int(meta.get("n_classes", 0)))]
    return Generator(fn, dim, meta.get("latent", "normal"), classes, int(meta.get("channels", 3)), str(path))


# --- what to draw --------------------------------------------------------------------------------
@dataclass
class Plan:
    latent: np.ndarray
    label: np.ndarray | None
    seeds: np.ndarray
    columns: int


def plan(gen: Generator, n: int, *, seed: int, class_index: int | None = None,
         interpolate: int | None = None) -> Plan:
    """Latents, labels and noise seeds for ``n`` images (or ``n // interpolate`` walks of
    ``interpolate`` frames), and the grid's column count."""
    if n < 1:
        raise ConfigError("--n must be at least 1")
    rng = np.random.default_rng(seed)
    conditional = gen.n_classes > 0
    if interpolate is not None:
        if interpolate < 2:
            raise ConfigError("--interpolate needs at least 2 frames")
        walks = max(1, n // interpolate)
        ends = draw_latents(2 * walks, gen.latent_dim, gen.latent, rng)
        t = np.linspace(0.0, 1.0, interpolate)
        latent = np.concatenate([slerp(ends[2 * w], ends[2 * w + 1], t) for w in range(walks)])
        walk_class = [class_index if class_index is not None else w % max(1, gen.n_classes) for w in range(walks)]
        label = np.repeat(np.asarray(walk_class, np.int64), interpolate) if conditional else None
        # one noise seed per walk: only the latent moves along it
        seeds = np.repeat(rng.integers(0, _MAX_SEED, walks), interpolate).astype(np.int64)
        return Plan(latent, label, seeds, interpolate)
    latent = draw_latents(n, gen.latent_dim, gen.latent, rng)
    if conditional:
        label = (np.full(n, class_index, np.int64) if class_index is not None
                 else np.arange(n, dtype=np.int64) % gen.n_classes)
        columns = gen.n_classes if class_index is None else math.ceil(math.sqrt(n))
    else:
        label, columns = None, math.ceil(math.sqrt(n))
    return Plan(latent, label, rng.integers(0, _MAX_SEED, n).astype(np.int64), columns)


def tile(images: np.ndarray, columns: int, pad: int = 2) -> np.ndarray:
    """NHWC uint8 images as one grid image, ``columns`` wide, white gaps."""
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = img
    return grid


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def save_image(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        _pil(img).save(tmp, format="PNG")


def write(images: np.ndarray, *, out: Path | None, out_dir: Path | None, columns: int, overwrite: bool) -> list[Path]:
    """The grid to ``out``, or one numbered PNG per image into ``out_dir``. Refuses to replace
    files unless ``overwrite``."""
    if out is not None:
        if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            raise ConfigError(f"{out}: --out is an image file (.png, .jpg, .webp); use --out-dir for a folder")
        if out.exists() and not overwrite:
            raise ConfigError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            _pil(tile(images, columns)).save(tmp, format=Image.registered_extensions()[out.suffix.lower()])
        return [out]
    assert out_dir is not None
    digits = max(4, len(str(len(images) - 1)))
    paths = [out_dir / f"{i:0{digits}d}.png" for i in range(len(images))]
    clash = [p for p in paths if p.exists()]
    if clash and not overwrite:
        raise ConfigError(f"{clash[0]} already exists ({len(clash)} of the outputs do); pass --overwrite to replace "
                          f"them, or choose another --out-dir")
    for img, p in zip(images, paths):
        save_image(img, p)
    return paths
