"""Serving exported generators with onnxruntime: the ``Translator`` API and the batch pipeline
behind ``translate run``. Imports neither torch nor torchvision: a serving image needs only
onnxruntime, NumPy and Pillow.

```python
from translate import Translator
t = Translator("export/horse2zebra-cyclegan-G_AB.onnx")
zebra = t(Image.open("horse.jpg"))          # PIL in, PIL out (any size)
zebras = t.batch([img1, img2, img3])         # images of equal size share one inference call
```

Any image size works: the input is reflect-padded to the network's size multiple and the output
cropped back. Images larger than ``tile`` x ``tile`` pixels are translated in overlapping tiles
blended with feathered weights, so memory stays bounded; for networks without instance
normalisation whose receptive field fits in the overlap's margin, the result equals the untiled one.
"""
from __future__ import annotations

import io
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from struct import error as struct_error

import numpy as np
from PIL import Image

from .errors import ConfigError, DataError, DeviceError, TranslateError
from .images import TooManyPixels, alpha_of, is_image_file, load_rgb, to_float, to_rgb, to_uint8
from .images import resize as resize_image

log = logging.getLogger("translate.run")

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")
DEFAULT_TILE = 1024
TRT_MAX_SIDE = 4096  # TensorRT's engine profile with --tile 0
SEED_RANGE = 2**31 - 1  # noise_seed values are in [0, SEED_RANGE)


class ModelError(TranslateError):
    """An .onnx file that is missing, unreadable or not a translate generator."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def create_session(model: str | Path, provider: str = "auto", threads: int | None = None, *,
                   max_batch: int = 4, max_side: int = DEFAULT_TILE):
    """An onnxruntime session on the requested provider. ``auto`` prefers TensorRT, then CUDA,
    then the CPU, keeping the first that really loads (a CUDA build on a machine without a GPU
    falls back to the CPU). Returns (session, provider name used)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu for CUDA)") \
            from None

    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; give an .onnx file made by 'translate export'")
    if provider not in ("auto", *PROVIDERS):
        raise ConfigError(f"unknown provider {provider!r}; choose auto, {', '.join(PROVIDERS)}")
    available = set(ort.get_available_providers())
    order = [p for p in AUTO_ORDER if p == "cpu" or gpu_usable(p)] if provider == "auto" else [provider]
    wanted = [p for p in dict.fromkeys(order) if PROVIDERS[p] in available]
    if provider not in ("auto", "cpu") and PROVIDERS[provider] not in available:
        raise ConfigError(f"onnxruntime here has no {PROVIDERS[provider]} (it has {', '.join(sorted(available))}); "
                          f"install the matching onnxruntime build or use --provider cpu")
    ort.set_default_logger_severity(4)  # a provider that fails to load is handled here, not logged
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or cpu_count()
    last_error: Exception | None = None
    for name in wanted:
        options: dict[str, Any] = {}
        if name in ("cuda", "tensorrt"):
            cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": True})
        if name == "cuda":
            chain = [cuda, ("CPUExecutionProvider", {})]
        elif name == "tensorrt":
            # one engine for every shape up to the tile size (no rebuild per image size); nodes
            # TensorRT does not take run on CUDA, not on the CPU
            lo, hi = "image:1x3x8x8", f"image:{max_batch}x3x{max_side}x{max_side}"
            opt = f"image:{max_batch}x3x{min(512, max_side)}x{min(512, max_side)}"
            options = {"trt_fp16_enable": _precision(path) == "fp16", "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(path.parent / ".trt-cache"),
                       "trt_profile_min_shapes": lo, "trt_profile_opt_shapes": opt, "trt_profile_max_shapes": hi}
            chain = [("TensorrtExecutionProvider", options), cuda, ("CPUExecutionProvider", {})]
        else:
            chain = [("CPUExecutionProvider", {})]
        try:
            sess = ort.InferenceSession(str(path), so, providers=chain)
        except Exception as exc:  # noqa: BLE001 - a provider that does not load: try the next
            text = str(exc)
            if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text or "Load model" in text:
                raise ModelError(f"{path} is not a readable ONNX model ({text.splitlines()[0][:120]}); "
                                 f"export it again with 'translate export'") from None
            if name == "cpu":
                raise ModelError(f"cannot load {path}: {text.splitlines()[0][:200]}; export it again with "
                                 f"'translate export'") from None
            last_error = exc
            continue
        used = sess.get_providers()[0]
        if used == PROVIDERS[name]:
            return sess, name
        if provider != "auto" and name != "cpu":
            raise DeviceError(f"--provider {provider}: {PROVIDERS[name]} does not load here (no GPU, or its CUDA "
                              f"/ cuDNN / TensorRT libraries are missing); use --provider auto or cpu")
    if last_error is not None:
        raise DeviceError(f"{provider} provider failed for {path}: {str(last_error).splitlines()[0][:200]}; "
                          f"use --provider cpu")
    raise ModelError(f"cannot load {path} on any provider")


def gpu_usable(kind: str) -> bool:
    """Whether trying a GPU provider makes sense here: an NVIDIA driver is loaded (and, for
    TensorRT, its library is installed). Spares CPU-only machines the providers' load errors."""
    import ctypes.util

    driver = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists() or os.name == "nt"
    if kind == "tensorrt":
        return driver and ctypes.util.find_library("nvinfer") is not None
    return driver


def _precision(path: Path) -> str:
    """The model's ``translate.precision`` (read before a TensorRT session is made)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.get_modelmeta().custom_metadata_map.get("translate.precision", "fp32")
    except Exception:  # noqa: BLE001 - an unreadable model is reported by the real session
        return "fp32"


@dataclass
class ModelInfo:
    size_multiple: int = 4
    min_side: int = 8
    noise: bool = False
    train_size: int = 256
    meta: dict[str, str] | None = None


def session_metadata(sess) -> dict[str, str]:
    """The ``translate.*`` metadata of an onnxruntime session's model, without the prefix."""
    return {k[len("translate."):]: v for k, v in sess.get_modelmeta().custom_metadata_map.items()
            if k.startswith("translate.")}


def model_info(sess) -> ModelInfo:
    meta = session_metadata(sess)
    inputs = {i.name: i for i in sess.get_inputs()}
    if "latent" in inputs:
        raise ModelError(f"this is a {meta.get('family', 'noise-to-image')} generator: it makes images from latents "
                         f"and does not translate them; use 'translate sample --model FILE.onnx'")
    if "image" not in inputs or [o.name for o in sess.get_outputs()][:1] != ["output"]:
        raise ModelError("the model has no 'image' input and 'output' output; it is not a translate generator "
                         "(export one with 'translate export')")
    norm = json.loads(meta.get("normalisation", "{}") or "{}")
    if norm and (norm.get("mean") != [0.5] * 3 or norm.get("std") != [0.5] * 3):
        raise ModelError(f"the model expects normalisation {norm}, which this runtime does not know")
    multiple = int(meta.get("size_multiple", 4))
    return ModelInfo(size_multiple=multiple, min_side=int(meta.get("min_side", max(multiple, 8))),
                     noise="noise_seed" in inputs,
                     train_size=int(meta.get("train_size", 256)), meta=meta)


# --- pixels <-> tensors ------------------------------------------------------------------------
def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """PIL image or array -> uint8 HWC RGB (grayscale, RGBA, palette and 16-bit converted)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"arrays must be uint8 HWC RGB, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"arrays must be HxWx3 RGB, got shape {image.shape}")
        return np.ascontiguousarray(image[..., :3])
    return np.asarray(to_rgb(image), dtype=np.uint8)


def padded_size(side: int, multiple: int, min_side: int) -> int:
    return max(-(-side // multiple) * multiple, -(-min_side // multiple) * multiple)


def pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad a CHW array at the bottom and right to (h, w). Reflection cannot reach further
    than the side is long, so tiny images are reflected repeatedly (a 1-px side is repeated)."""
    while x.shape[1] < h or x.shape[2] < w:
        ph = min(h - x.shape[1], x.shape[1] - 1)
        pw = min(w - x.shape[2], x.shape[2] - 1)
        if (ph <= 0 < h - x.shape[1]) or (pw <= 0 < w - x.shape[2]):  # a side of 1 pixel: repeat it
            x = np.pad(x, ((0, 0), (0, max(0, h - x.shape[1]) if ph <= 0 else 0),
                           (0, max(0, w - x.shape[2]) if pw <= 0 else 0)), mode="edge")
            continue
        x = np.pad(x, ((0, 0), (0, max(ph, 0)), (0, max(pw, 0))), mode="reflect")
    return x


def pad_to_multiple(x: np.ndarray, multiple: int, min_side: int = 1) -> np.ndarray:
    """Reflect-pad a CHW array at the bottom and right to sides divisible by ``multiple`` (and at
    least ``min_side``)."""
    return pad_to(x, padded_size(x.shape[1], multiple, min_side), padded_size(x.shape[2], multiple, min_side))


def to_pixels(out: np.ndarray, h: int, w: int) -> np.ndarray:
    """CHW in [-1, 1] -> uint8 HWC, cropped to (h, w)."""
    return to_uint8(out[:, :h, :w])


def _feather(length: int, start: int, tile: int, margin: int, ramp: int) -> np.ndarray:
    """Blend weights along one axis of a tile: ~0 within ``margin`` of an edge shared with a
    neighbour tile, rising linearly over ``ramp``, 1 inside; image edges get full weight."""
    i = np.arange(tile, dtype=np.float32)
    w = np.ones(tile, dtype=np.float32)
    if start > 0:
        w = np.minimum(w, np.clip((i - margin + 1) / ramp, 1e-6, 1.0))
    if start + tile < length:
        w = np.minimum(w, np.clip((tile - i - margin) / ramp, 1e-6, 1.0))
    return w


def tile_starts(length: int, tile: int, overlap: int, multiple: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


# --- the translator ----------------------------------------------------------------------------
class Translator:
    """An exported generator, ready to translate images (see the module docs).

    ``seed``: for models whose noise is their dropout (pix2pix), ``None`` draws fresh noise for every
    image (what training samples show) and an integer makes the outputs repeatable.
    ``tile``: images with more than ``tile`` x ``tile`` pixels go through in overlapping tiles
    (0: never).
    """

    def __init__(self, model: str | Path, *, provider: str = "auto", threads: int | None = None,
                 seed: int | None = None, tile: int = DEFAULT_TILE, batch_size: int = 4) -> None:
        if tile < 0:
            raise ConfigError(f"--tile must be 0 (never tile) or a tile size in pixels, not {tile}")
        self.path = Path(model)
        self.batch_size = max(1, batch_size)
        self.session, self.provider = create_session(self.path, provider, threads, max_batch=self.batch_size,
                                                     max_side=max(tile, 256) if tile else TRT_MAX_SIDE)
        self.info = model_info(self.session)
        self.multiple = self.info.size_multiple
        self.seed = seed
        self.overlap = max(2 * self.multiple, -(-128 // self.multiple) * self.multiple)
        self.tile = 0 if not tile else tile // self.multiple * self.multiple
        if self.provider == "tensorrt":  # its engine's profile ends at this side: tile beyond it
            self.tile = self.tile or TRT_MAX_SIDE // self.multiple * self.multiple
        if tile and self.tile < 2 * self.overlap:
            raise ConfigError(f"--tile {tile} is too small for this model: tiles overlap by {self.overlap} px, so "
                              f"use at least {2 * self.overlap} (or 0: never tile)")
        self._rng = np.random.default_rng(seed)
        self._on_gpu = self.provider in ("cuda", "tensorrt")

    def __repr__(self) -> str:
        return f"Translator({str(self.path)!r}, provider={self.provider!r})"

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.info.meta or {})

    # public API --------------------------------------------------------------------------------
    def __call__(self, image: Image.Image | np.ndarray, *, key: str | None = None) -> Image.Image:
        return self.batch([image], keys=None if key is None else [key])[0]

    def batch(self, images: Sequence[Image.Image | np.ndarray], *,
              keys: Sequence[str] | None = None) -> list[Image.Image]:
        arrays = [to_rgb_array(im) for im in images]
        alphas = [alpha_of(im) if isinstance(im, Image.Image) else None for im in images]
        outs = self.translate_arrays(arrays, keys=keys)
        return [Image.fromarray(o if a is None else np.dstack([o, a])) for o, a in zip(outs, alphas)]

    def translate_arrays(self, arrays: Sequence[np.ndarray], *,
                         keys: Sequence[str] | None = None) -> list[np.ndarray]:
        """uint8 HWC RGB arrays in, the same out; equal shapes are batched together."""
        out: list[np.ndarray | None] = [None] * len(arrays)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape[:2], []).append(i)
        for idx in groups.values():
            for j in range(0, len(idx), self.batch_size):
                part = idx[j: j + self.batch_size]
                res = self.run_same_shape([arrays[i] for i in part], [keys[i] for i in part] if keys else None)
                for i, r in zip(part, res):
                    out[i] = r
        return out  # type: ignore[return-value]

    # the work ----------------------------------------------------------------------------------
    def seeds_for(self, n: int, keys: Sequence[str] | None = None) -> np.ndarray:
        """One noise seed per image: fresh, or (with ``seed``) from the seed and the image's key."""
        if self.seed is None:
            return self._rng.integers(0, SEED_RANGE, n, dtype=np.int64)
        if keys is None:
            return np.full(n, noise_seed(self.seed), dtype=np.int64)
        return np.array([zlib.crc32(f"{self.seed}:{k}".encode()) % SEED_RANGE for k in keys], dtype=np.int64)

    def needs_tiling(self, h: int, w: int) -> bool:
        ph, pw = padded_size(h, self.multiple, self.info.min_side), padded_size(w, self.multiple, self.info.min_side)
        if self.provider == "tensorrt":  # no side may pass the engine profile's maximum
            return max(ph, pw) > self.tile
        return bool(self.tile) and ph * pw > self.tile * self.tile and max(ph, pw) > self.tile

    def run_same_shape(self, arrays: Sequence[np.ndarray], keys: Sequence[str] | None = None,
                       seeds: Sequence[int] | None = None) -> list[np.ndarray]:
        """Images of one shape (uint8 HWC RGB) in one inference call (or tiles); ``seeds``: the
        noise seed of each image (default: from the translator's ``seed`` and ``keys``)."""
        h, w = arrays[0].shape[:2]
        seeds = self.seeds_for(len(arrays), keys) if seeds is None else np.asarray(seeds, dtype=np.int64)
        if self.needs_tiling(h, w):
            return [self._tiled(a, int(s)) for a, s in zip(arrays, seeds)]
        x = np.stack([pad_to_multiple(to_float(a), self.multiple, self.info.min_side) for a in arrays])
        y = self.infer(x, seeds)
        return [to_pixels(y[i], h, w) for i in range(len(arrays))]

    def infer(self, x: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
        """The raw model: float32 NCHW in [-1, 1] with sides a multiple of ``size_multiple``."""
        feed: dict[str, np.ndarray] = {"image": np.ascontiguousarray(x, dtype=np.float32)}
        if self.info.noise:
            feed["noise_seed"] = seeds if seeds is not None else self.seeds_for(x.shape[0])
        if self._on_gpu:
            return self._infer_bound(feed)
        return self.session.run(["output"], feed)[0]

    def _infer_bound(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """IO binding on the GPU: inputs copied once, the output allocated on the device."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
        binding.bind_output("output", "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _tiled(self, rgb: np.ndarray, seed: int) -> np.ndarray:
        """Overlapping tiles, blended with feathered weights. (Dropout noise is drawn per tile: its
        masks are keyed by the position within the tile.)"""
        h, w = rgb.shape[:2]
        x = pad_to_multiple(to_float(rgb), self.multiple, self.info.min_side)
        _, H, W = x.shape
        t = self.tile
        th, tw = min(t, H), min(t, W)
        margin = self.overlap // 4
        ramp = max(1, self.overlap - 2 * margin)
        acc = np.zeros((3, H, W), dtype=np.float32)
        wsum = np.zeros((H, W), dtype=np.float32)
        boxes = [(y0, x0) for y0 in tile_starts(H, th, self.overlap, self.multiple)
                 for x0 in tile_starts(W, tw, self.overlap, self.multiple)]
        for j in range(0, len(boxes), self.batch_size):
            part = boxes[j: j + self.batch_size]
            batch = np.stack([x[:, y0: y0 + th, x0: x0 + tw] for y0, x0 in part])
            y = self.infer(batch, np.full(len(part), seed, dtype=np.int64))
            for k, (y0, x0) in enumerate(part):
                wt = np.outer(_feather(H, y0, th, margin, ramp), _feather(W, x0, tw, margin, ramp))
                acc[:, y0: y0 + th, x0: x0 + tw] += y[k] * wt
                wsum[y0: y0 + th, x0: x0 + tw] += wt
        return to_pixels(acc / wsum, h, w)


def noise_seed(seed: int) -> int:
    """The model's ``noise_seed`` for a user's seed (``Translator(seed=S)``, ``seed=S`` of the HTTP API
    and the browser page all give the same noise)."""
    return int(seed) % SEED_RANGE


def newest_model(folder: str | Path = "export") -> Path | None:
    models = sorted(Path(folder).glob("*.onnx"), key=lambda p: p.stat().st_mtime) if Path(folder).is_dir() else []
    return models[-1] if models else None


# --- translate run: files in, files out --------------------------------------------------------
WRITABLE = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
            ".webp": "WEBP", ".ppm": "PPM"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
MAX_HELD_PIXELS = 64 << 20  # decoded pixels waiting for a batch, across all image sizes


@dataclass
class Job:
    src: Path
    dst: Path
    key: str  # relative path: names the output and keys the noise seed


@dataclass
class RunSummary:
    done: int = 0
    skipped: int = 0  # outputs already there
    failed: list[tuple[Path, str]] | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.failed = self.failed or []


def output_suffix(src: Path, fmt: str) -> str:
    if fmt == "png":
        return ".png"
    if fmt == "jpg":
        return ".jpg"
    suffix = src.suffix.lower()
    return suffix if suffix in WRITABLE else ".png"  # e.g. .gif, .pgm: written as PNG


def plan_jobs(input_path: str | Path, out: str | Path, fmt: str = "same") -> list[Job]:
    """What to translate and where each output goes. INPUT: a folder (walked recursively, hidden
    files skipped, the structure mirrored under OUT), one image (OUT a folder, or a file name with
    an image suffix), or a text file listing image paths (relative ones from the list's folder).
    Refuses plans where two inputs would write one output or an output would replace an input."""
    src, out = Path(input_path), Path(out)
    if not src.exists():
        raise ConfigError(f"{src} does not exist; give a folder of images, one image, or a text file listing images")
    if src.is_dir():
        root_in, root_out = src.resolve(), out.resolve()
        if root_out == root_in or root_in in root_out.parents:
            raise ConfigError(f"the output folder {out} is inside the input folder {src}; outputs would be read as "
                              f"inputs on the next run. Choose an output folder outside {src}")
        files = sorted(p for p in src.rglob("*") if p.is_file() and is_image_file(p)
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
        if not files:
            raise ConfigError(f"{src} holds no images (png, jpg, ...); check the path")
        jobs = [Job(p, out / p.relative_to(src).with_suffix(output_suffix(p, fmt)), str(p.relative_to(src)))
                for p in files]
    elif src.suffix.lower() in LIST_SUFFIXES:
        try:
            lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError:
            raise ConfigError(f"{src} is not UTF-8 text; write the list as one image path per line") from None
        paths = list(dict.fromkeys((src.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines
                                   if ln and not ln.startswith("#")))
        if not paths:
            raise ConfigError(f"{src} lists no image paths; write one path per line")
        if not any(p.exists() for p in paths):
            raise ConfigError(f"none of the {len(paths)} paths in {src} exists (e.g. {paths[0]}); relative paths are "
                              f"read from the list's own folder")
        parents = [p.parent.resolve() / p.name for p in paths]  # resolve folders, keep symlinked names
        base = Path(os.path.commonpath([str(p.parent) for p in parents]))
        jobs = [Job(p, out / r.relative_to(base).with_suffix(output_suffix(p, fmt)), str(r.relative_to(base)))
                for p, r in zip(paths, parents)]
    elif out.suffix.lower() in WRITABLE and not out.is_dir():
        jobs = [Job(src, out, src.name)]
    else:
        jobs = [Job(src, out / Path(src.name).with_suffix(output_suffix(src, fmt)), src.name)]
    if out.exists() and not out.is_dir() and not (len(jobs) == 1 and jobs[0].dst == out):
        raise ConfigError(f"{out} is a file; give a folder for the outputs")
    inputs = {j.src.resolve() for j in jobs}
    seen: dict[Path, Path] = {}
    for j in jobs:
        dst = j.dst.resolve()
        if dst in inputs:
            raise ConfigError(f"the output for {j.src} would replace an input ({j.dst}); choose another output folder")
        if dst in seen:
            raise ConfigError(f"{seen[dst]} and {j.src} would both be written to {j.dst}; rename one, or keep their "
                              f"formats apart with --format same")
        seen[dst] = j.src
    return jobs


def decode(path: Path, resize: int | None = None) -> np.ndarray:
    """uint8 HWC: RGB, or RGBA when the image has transparency (the alpha is carried through to the
    output, the network sees RGB). EXIF orientation applied; ``resize``: scale so the shorter side is
    that many pixels."""
    out = load_rgb(path, keep_alpha=True)
    if resize:
        h, w = out.shape[:2]
        s = resize / min(h, w)
        out = resize_image(out, (max(1, round(h * s)), max(1, round(w * s))))
    return out


# Formats decoded from untrusted bytes (the HTTP server): common raster formats only (JPEG includes
# phones' multi-picture JPEGs), none whose Pillow plugin runs an external program (EPS) or is
# rarely used and little tested.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "TGA")


class UnreadableImage(DataError):
    """Bytes that are not an image of a known format, or a truncated / corrupt one."""


class ImageTooLarge(DataError):
    """An image with more pixels than allowed (refused from its header, before decoding)."""


def decode_bytes(data: bytes, *, max_pixels: int | None = None,
                 formats: tuple[str, ...] | None = UPLOAD_FORMATS) -> np.ndarray:
    """An encoded image in memory -> uint8 HWC RGB, or RGBA when it has transparency: what
    :func:`decode` does for a file (EXIF orientation, grayscale, palette, 16-bit). ``max_pixels`` is
    checked from the header before any pixel is decoded, so a decompression bomb costs nothing.
    Raises ``UnreadableImage`` or ``ImageTooLarge`` with one line."""
    if not data:
        raise UnreadableImage("empty image: no bytes")
    try:
        return load_rgb(io.BytesIO(data), keep_alpha=True, max_pixels=max_pixels, formats=formats)
    except (TooManyPixels, Image.DecompressionBombError) as exc:
        raise ImageTooLarge(f"the image is too large ({exc})") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(f"not an image of a format read here ({', '.join(formats or ('any',)).lower()})") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct_error) as exc:
        raise UnreadableImage(f"truncated or corrupt image ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})") from None


ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")
ENCODE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def to_image(rgb: np.ndarray, fmt: str, alpha: np.ndarray | None = None) -> Image.Image:
    """A translated image, with the input's alpha put back on where the Pillow format ``fmt`` can hold it."""
    return Image.fromarray(np.dstack([rgb, alpha]) if alpha is not None and fmt in ALPHA_FORMATS else rgb)


def encode_bytes(rgb: np.ndarray, fmt: str = "PNG", alpha: np.ndarray | None = None, *,
                 quality: int | None = None, compress_level: int | None = None) -> bytes:
    """Encode in memory (what the HTTP server sends back); ``fmt`` a Pillow format name."""
    kwargs = dict(ENCODE_OPTIONS.get(fmt, {}))
    if quality is not None and fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if compress_level is not None and fmt == "PNG":
        kwargs["compress_level"] = compress_level
    buf = io.BytesIO()
    to_image(rgb, fmt, alpha).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def encode(rgb: np.ndarray, dst: Path, alpha: np.ndarray | None = None) -> None:
    """Write atomically; the input's alpha goes back on where the format can hold it."""
    from .fileio import atomic_path

    fmt = WRITABLE.get(dst.suffix.lower(), "PNG")
    img = to_image(rgb, fmt, alpha)
    with atomic_path(dst) as tmp:
        img.save(tmp, format=fmt, **ENCODE_OPTIONS.get(fmt, {}))


def unreadable(exc: BaseException) -> str:
    """The report for an input that does not decode."""
    return f"not a readable image ({type(exc).__name__}: {exc})"


def split_alpha(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded HWC array -> (RGB for the network, the alpha channel to put back or None)."""
    return a[..., :3], (a[..., 3] if a.shape[2] == 4 else None)


def translate_or_split(translator: Translator, arrays: Sequence[np.ndarray],
                       keys: Sequence[str]) -> list[np.ndarray | str]:
    """RGB arrays of one shape (at most a batch) -> their outputs; when the batch fails (e.g. out of
    memory) each image is tried alone, and one that still fails gives its error message instead."""
    try:
        return list(translator.run_same_shape(arrays, keys))
    except Exception as exc:  # noqa: BLE001 - reported per image, the rest go on
        if len(arrays) > 1:
            return [r for a, k in zip(arrays, keys) for r in translate_or_split(translator, [a], [k])]
        return [f"translation failed: {exc}"]


def run_jobs(translator: Translator, jobs: list[Job], *, workers: int | None = None, overwrite: bool = False,
             resize: int | None = None, progress: bool = True) -> RunSummary:
    """Translate ``jobs`` with decoding and encoding on a thread pool, overlapped with inference:
    while the model runs on one batch, the pool decodes the next ones and writes the last ones.
    Images of equal shape are batched. A bad file is reported and skipped."""
    import time
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm.auto import tqdm

    summary = RunSummary()
    todo = [j for j in jobs if overwrite or not j.dst.exists()]
    summary.skipped = len(jobs) - len(todo)
    workers = workers or max(2, min(8, cpu_count()))
    window = max(2 * translator.batch_size, 2 * workers)  # decoded images in flight: bounded memory
    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", desc="translate", disable=not progress, dynamic_ncols=True)
    buckets: dict[tuple[int, int], list[tuple[Job, np.ndarray]]] = {}
    writes: deque[tuple[Job, Future]] = deque()

    def finish_writes(block: bool) -> None:
        while writes and (block or writes[0][1].done()):
            job, fut = writes.popleft()
            try:
                fut.result()
                summary.done += 1
            except Exception as exc:  # noqa: BLE001 - disk full, permissions: reported per file
                summary.failed.append((job.src, f"cannot write {job.dst}: {exc}"))
            bar.update(1)

    def infer(items: list[tuple[Job, np.ndarray]]) -> None:
        outs = translate_or_split(translator, [a[..., :3] for _, a in items], [j.key for j, _ in items])
        for (job, a), rgb in zip(items, outs):
            if isinstance(rgb, str):
                summary.failed.append((job.src, rgb))
                bar.update(1)
                continue
            writes.append((job, pool.submit(encode, rgb, job.dst, split_alpha(a)[1])))
        finish_writes(block=False)
        bar.set_postfix_str(f"{(bar.n + len(writes)) / max(time.perf_counter() - start, 1e-9):.2f} img/s",
                            refresh=False)

    held = {"images": 0, "pixels": 0}

    def flush(shape: tuple[int, int]) -> None:
        items = buckets.pop(shape)
        held["images"] -= len(items)
        held["pixels"] -= len(items) * shape[0] * shape[1]
        infer(items)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="translate-io") as pool:
        pending: deque[tuple[Job, Future]] = deque()
        it = iter(todo)
        for job in it:
            pending.append((job, pool.submit(decode, job.src, resize)))
            if len(pending) >= window:
                break
        while pending:
            job, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(decode, nxt.src, resize)))
            try:
                rgb = fut.result()
            except Exception as exc:  # noqa: BLE001 - corrupt or not an image
                summary.failed.append((job.src, unreadable(exc)))
                bar.update(1)
                continue
            shape = rgb.shape[:2]
            buckets.setdefault(shape, []).append((job, rgb))
            held["images"] += 1
            held["pixels"] += shape[0] * shape[1]
            if len(buckets[shape]) >= translator.batch_size or translator.needs_tiling(*shape):
                flush(shape)
            # images of many sizes: never hold more than the window (or 64 MP) waiting for a full
            # batch; the bucket waiting longest goes now, part-filled
            while held["images"] > window or held["pixels"] > MAX_HELD_PIXELS:
                flush(next(iter(buckets)))
        for shape in list(buckets):
            flush(shape)
        finish_writes(block=True)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
