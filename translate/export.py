"""torch -> ONNX: a trained generator as a self-describing .onnx file, verified against torch.

The graph takes ``image``: float32 ``(N, 3, H, W)`` in [-1, 1] (RGB; ``x / 127.5 - 1``) with
dynamic batch, height and width (sides a multiple of ``size_multiple``; ``translate run`` pads
and crops back), and gives ``output`` in the same form. A generator whose dropout is its noise
(pix2pix) also takes ``noise_seed``: int64 ``(N,)``, one seed per image. The dropout masks are a
pure function of the seed and the position (:func:`translate.nn.layers.hash_keep_mask`), so the
graph needs no random operator and gives, for a given seed, exactly what torch gives:

- ``--noise sample`` (default, what the training samples show): the runtime draws a fresh seed
  per image, or derives it from ``--seed`` for repeatable results;
- ``--noise off``: dropout is the identity (ordinary eval-mode dropout); no seed input.

Everything the runtime needs is in the model's metadata (``translate.*`` keys): family, generator,
direction, training size, normalisation, size multiple, noise, precision, package version and a
hash of the run's config.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import ConfigError, TranslateError
from .fileio import atomic_path
from .nn.layers import seeded_noise
from .run import LoadedGenerator, config_hash, load_generator

log = logging.getLogger("translate.export")

FP32_TOLERANCE = 1e-3
FP16_TOLERANCE = 3e-2  # fp16 arithmetic: about 10 bits of mantissa through 20-odd layers
NOISE_CHOICES = ("sample", "off")
META_PREFIX = "translate."


class ExportError(TranslateError):
    """The exported model is not what torch computes, or cannot be built."""


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    checks: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    int8: dict[str, float] | None = None


def size_multiple(net: nn.Module) -> int:
    return int(getattr(net, "size_multiple", 4))


def probe_side(net: nn.Module, size: int) -> int:
    """The side traced and verified at: the training size, capped at 256 px to keep export quick,
    and a multiple of what the network needs."""
    m = size_multiple(net)
    return max(m, min(size, 256) // m * m)


def min_side(net: nn.Module) -> int:
    """The smallest side the network accepts (the runtime pads smaller images up to it)."""
    return max(size_multiple(net), int(getattr(net, "min_side", 0)))


def has_noise(net: nn.Module) -> bool:
    from .nn.layers import NoiseDropout, NoiseInjection

    return any(isinstance(m, NoiseDropout) and m.p > 0 or isinstance(m, NoiseInjection) for m in net.modules())


class _Graph(nn.Module):
    """What is traced: the generator, with the dropout masks keyed by a seed input."""

    def __init__(self, net: nn.Module, noise: bool) -> None:
        super().__init__()
        self.net = net
        self.noise = noise

    def forward(self, image: torch.Tensor, noise_seed: torch.Tensor | None = None) -> torch.Tensor:
        with seeded_noise(self.net, self.noise, noise_seed):
            return self.net(image)


def torch_reference(net: nn.Module, image: np.ndarray, seeds: np.ndarray | None, noise: bool) -> np.ndarray:
    """What the exported graph must compute, in torch, for the same inputs."""
    graph = _Graph(net, noise).eval()
    with torch.no_grad(), _winograd_off(net):
        out = graph(torch.from_numpy(image), None if seeds is None else torch.from_numpy(seeds))
    return out.numpy()


@contextlib.contextmanager
def _winograd_off(net: nn.Module):
    """Plain convolutions (what the exported graph computes), restoring each layer's own setting."""
    from .nn.winograd import WinogradConv2d

    layers = [m for m in net.modules() if isinstance(m, WinogradConv2d)]
    before = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield
    finally:
        for m, on in zip(layers, before):
            m.enabled = on


def metadata_for(g: LoadedGenerator, noise: str, precision: str) -> dict[str, str]:
    t = g.cfg.train
    return {
        "family": t.model, "generator": g.name, "direction": g.direction, "source": g.source_side,
        "train_size": str(t.size), "size_multiple": str(size_multiple(g.net)), "min_side": str(min_side(g.net)),
        "normalisation": json.dumps({"mean": [0.5] * 3, "std": [0.5] * 3, "range": [-1, 1], "layout": "NCHW RGB"}),
        "noise": noise if has_noise(g.net) else "none", "precision": precision,
        "version": __version__, "config_hash": config_hash(g.cfg), "run": g.run_dir.name, "step": str(g.step),
        "ema": str(g.ema).lower(), "data": t.pair or (Path(t.data).name if t.data else "synthetic"),
    }


def read_metadata(model) -> dict[str, str]:
    """The ``translate.*`` metadata of an onnx.ModelProto, without the prefix."""
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def _set_metadata(model, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    model.producer_name, model.producer_version = "translate", __version__
    model.doc_string = (f"translate {meta.get('family')} generator {meta.get('generator')} ({meta.get('direction')}); "
                        f"input 'image' float32 NCHW RGB in [-1, 1], sides a multiple of {meta.get('size_multiple')}"
                        + ("; input 'noise_seed' int64 (N,)" if meta.get("noise") == "sample" else ""))


# --- export ------------------------------------------------------------------------------------
def default_output(g: LoadedGenerator, precision: str = "fp32", root: str | Path = "export") -> Path:
    stem = g.run_dir.name + (f"-{g.name}" if g.name != "G" else "") + ("" if precision == "fp32" else f"-{precision}")
    return Path(root) / f"{stem}.onnx"


def export_generator(source: str | Path, *, generator: str | None = None, out: str | Path | None = None,
                     opset: int = 17, noise: str = "sample", fp16: bool = False, int8: bool = False,
                     calibration: str | Path | None = None, overwrite: bool = False,
                     quiet: bool = False) -> ExportResult:
    """Export, check and verify a run's generator. See the module docs for the graph's contract."""
    import onnx

    if noise not in NOISE_CHOICES:
        raise ConfigError(f"--noise must be one of {', '.join(NOISE_CHOICES)}, not {noise!r}")
    if fp16 and int8:
        raise ConfigError("--fp16 and --int8 are two different deployments; export them one at a time")
    if int8 and calibration is None:
        raise ConfigError("--int8 needs --calibration DIR: a folder of images like those the model will see "
                          "(a few dozen are enough)")
    if opset < 13:
        raise ConfigError(f"--opset {opset} is too old; use 13 or newer (17 recommended)")
    g = load_generator(source, generator)
    if g.family.generative and int8:
        raise ConfigError(f"--int8 is calibrated on input images, and {g.cfg.train.model} generators take "
                          f"latents; export it in fp32 (or --fp16 for GPUs)")
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    path = Path(out) if out else default_output(g, precision)
    if path.suffix != ".onnx":
        raise ConfigError(f"{path}: the output must end in .onnx")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --overwrite to replace it, or choose another --out")
    if g.family.generative:
        return _export_generative(g, path, opset=opset, noise=noise, fp16=fp16)
    calib_images = _calibration_images(calibration, g) if int8 else None
    active = noise == "sample" and has_noise(g.net)
    meta = metadata_for(g, noise, "fp32")

    fp32_model = _trace(g.net, active, opset, g.cfg.train.size)
    _set_metadata(fp32_model, meta)
    onnx.checker.check_model(fp32_model)
    checks = ["onnx.checker passed"]
    inputs = verification_inputs(g)
    diff = verify(fp32_model, g.net, inputs, active, FP32_TOLERANCE, "fp32")
    checks.append(f"fp32 matches torch: max abs diff {diff:.2e} over {len(inputs)} inputs "
                  f"(limit {FP32_TOLERANCE:.0e})")
    result = ExportResult(path, diff, checks, meta)
    model = fp32_model
    if fp16:
        model = to_fp16(fp32_model)
        _set_metadata(model, {**meta, "precision": "fp16"})
        onnx.checker.check_model(model)
        diff16 = verify(model, g.net, inputs, active, FP16_TOLERANCE, "fp16")
        checks.append(f"fp16 against torch fp32: max abs diff {diff16:.2e} (limit {FP16_TOLERANCE:.0e}); "
                      f"InstanceNormalization kept in fp32, inputs and outputs float32")
        result.max_abs_diff = diff16
    if int8:
        model, report = to_int8(fp32_model, calib_images, active, quiet=quiet)
        _set_metadata(model, {**meta, "precision": "int8"})
        onnx.checker.check_model(model)
        result.int8 = report
        checks.append(f"int8 (QDQ, per-channel, {report['images']} calibration images): "
                      f"{report['speedup']:.2f}x the fp32 speed on this machine, PSNR {report['psnr']:.1f} dB "
                      f"against fp32 outputs (min {report['psnr_min']:.1f} dB)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    result.metadata = read_metadata(model)
    return result


# --- noise-to-image generators (dcgan, cgan) ----------------------------------------------------------
class _LatentGraph(nn.Module):
    """What is traced for a noise-to-image generator: ``latent`` (N, latent_dim) float32, then
    ``label`` (N,) int64 when class-conditional, then ``noise_seed`` (N,) int64 when the generator
    has noise layers (dropout, injected noise), which draw from the seed as in the translators."""

    def __init__(self, net: nn.Module, noise: bool) -> None:
        super().__init__()
        self.net, self.noise = net, noise
        self.conditional = bool(getattr(net, "n_classes", 0))

    def input_names(self) -> list[str]:
        return ["latent"] + (["label"] if self.conditional else []) + (["noise_seed"] if self.noise else [])

    def forward(self, latent: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        label = rest[0] if self.conditional else None
        with seeded_noise(self.net, self.noise, rest[-1] if self.noise else None):
            return self.net(latent, label)


def generative_inputs(net: nn.Module, noise: bool, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {"latent": rng.standard_normal((n, net.latent_dim)).astype(np.float32)}
    if getattr(net, "n_classes", 0):
        feed["label"] = rng.integers(0, net.n_classes, n).astype(np.int64)
    if noise:
        feed["noise_seed"] = rng.integers(0, 2**31 - 1, n).astype(np.int64)
    return feed


def generative_metadata(g: LoadedGenerator, noise: str, precision: str) -> dict[str, str]:
    t, m = g.cfg.train, g.cfg.model
    n_classes = int(getattr(m, "n_classes", 0))
    return {
        "family": t.model, "generator": g.name, "latent_dim": str(m.latent_dim), "latent": m.latent,
        "n_classes": str(n_classes), "classes": json.dumps(g.checkpoint.classes(n_classes) if n_classes else []),
        "channels": str(g.net.channels), "train_size": str(t.size),
        "normalisation": json.dumps({"mean": [0.5] * g.net.channels, "std": [0.5] * g.net.channels,
                                     "range": [-1, 1], "layout": "NCHW"}),
        "noise": noise if has_noise(g.net) else "none", "precision": precision,
        "version": __version__, "config_hash": config_hash(g.cfg), "run": g.run_dir.name, "step": str(g.step),
        "ema": str(g.ema).lower(), "data": t.pair or (Path(t.data).name if t.data else "synthetic"),
    }


def _export_generative(g: LoadedGenerator, path: Path, *, opset: int, noise: str, fp16: bool) -> ExportResult:
    """``export_generator`` for a latent (and label) generator; ``path`` is checked by the caller."""
    import io

    import onnx

    precision = "fp16" if fp16 else "fp32"
    active = noise == "sample" and has_noise(g.net)
    graph = _LatentGraph(g.net, active).eval()
    names = graph.input_names()
    example = {k: torch.from_numpy(v) for k, v in generative_inputs(g.net, active, 2).items()}
    axes = {name: {0: "batch"} for name in [*names, "output"]}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(example[k] for k in names), buf, dynamo=False, input_names=names,
                          output_names=["output"], dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    model = onnx.load_model_from_string(buf.getvalue())
    meta = generative_metadata(g, noise, precision)
    _set_metadata(model, meta)
    model.doc_string = (f"translate {meta['family']} generator: inputs {', '.join(names)}; output float32 NCHW in "
                        f"[-1, 1], {meta['channels']} channel(s), {meta['train_size']} px")
    checks = []
    if fp16:
        model = to_fp16(model)
        _set_metadata(model, meta)
    onnx.checker.check_model(model)
    checks.append("onnx.checker passed")
    tolerance = FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    sess = _session(model)
    worst = 0.0
    for n, seed in ((1, 0), (5, 1), (16, 2)):
        feed = generative_inputs(g.net, active, n, seed)
        got = sess.run(["output"], feed)[0].astype(np.float32)
        with torch.no_grad():
            ref = graph(*(torch.from_numpy(feed[k]) for k in names)).numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportError(f"the {precision} ONNX model differs from torch by up to {worst:.3g} (limit {tolerance:g}); "
                          f"not saved. Re-run with --debug and report it")
    checks.append(f"{precision} matches torch: max abs diff {worst:.2e} over 3 batches (limit {tolerance:.0e})")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return ExportResult(path, worst, checks, read_metadata(model))


def _trace(net: nn.Module, noise: bool, opset: int, size: int):
    """Trace to ONNX (the TorchScript exporter: no extra dependencies) with dynamic N, H, W."""
    import io

    import onnx

    side = probe_side(net, size)
    image = torch.zeros(1, 3, side, side)
    args: tuple = (image, torch.zeros(1, dtype=torch.int64)) if noise else (image,)
    names = ["image", "noise_seed"] if noise else ["image"]
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}
    if noise:
        axes["noise_seed"] = {0: "batch"}
    graph = _Graph(net, noise).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _winograd_off(net):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, args, buf, dynamo=False, input_names=names, output_names=["output"],
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True)
    return onnx.load_model_from_string(buf.getvalue())


def verification_inputs(g: LoadedGenerator, n_real: int = 2) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Random inputs of two shapes (one not square, to exercise the dynamic axes) and, where the
    run's data is at hand, real images of the generator's source domain. Each with seeds."""
    m = size_multiple(g.net)
    side = probe_side(g.net, g.cfg.train.size)
    rng = np.random.default_rng(0)
    shapes = [(2, 3, side, side), (1, 3, side, side + m)]
    out = [(rng.uniform(-1, 1, s).astype(np.float32), rng.integers(0, 2**31 - 1, s[0]).astype(np.int64))
           for s in shapes]
    real = _real_images(g, n_real, side)
    if real is not None:
        out.append((real, rng.integers(0, 2**31 - 1, real.shape[0]).astype(np.int64)))
    return out


def _real_images(g: LoadedGenerator, n: int, side: int) -> np.ndarray | None:
    from .data import TranslationDataset, detect_layout

    t = g.cfg.train
    try:
        layout = detect_layout(t.data)
        ds = TranslationDataset(layout, size=side, load_size=None, flip=False,
                                unpaired=g.family.data_of(g.cfg) == "unpaired", synthetic_count=t.synthetic_count,
                                seed=t.seed)
        batch = ds.sample_batch(n)
    except TranslateError as exc:
        log.info("note: verifying on random inputs only (the run's data is not at hand: %s)", exc)
        return None
    return batch[g.source_side].numpy().astype(np.float32)


def _session(model, providers: list[str] | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=providers or ["CPUExecutionProvider"])


def _feed(sess, image: np.ndarray, seeds: np.ndarray | None) -> dict[str, np.ndarray]:
    names = [i.name for i in sess.get_inputs()]
    feed = {"image": image}
    if "noise_seed" in names:
        feed["noise_seed"] = seeds
    return feed


def verify(model, net: nn.Module, inputs: list[tuple[np.ndarray, np.ndarray | None]], noise: bool,
           tolerance: float, label: str) -> float:
    """Run the ONNX model in onnxruntime and torch on the same inputs; raise ExportError when the
    largest absolute difference passes ``tolerance``. Returns that difference."""
    sess = _session(model)
    worst = 0.0
    for image, seeds in inputs:
        got = sess.run(["output"], _feed(sess, image, seeds))[0]
        ref = torch_reference(net, image, seeds if noise else None, noise)
        if got.shape != ref.shape:
            raise ExportError(f"the {label} ONNX model gives shape {got.shape} for input {image.shape}, torch gives "
                              f"{ref.shape}; the export is broken (please report it)")
        worst = max(worst, float(np.abs(got.astype(np.float32) - ref).max()))
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportError(f"the {label} ONNX model differs from torch by up to {worst:.3g} (limit {tolerance:g}); "
                          f"not saved. Re-run with --debug and report it (an unsupported layer or opset)")
    return worst


def to_fp16(model):
    """fp16 weights and activations for GPU providers; InstanceNormalization (whose variance
    overflows fp16 on bright images) stays fp32, as do the graph's inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(model, keep_io_types=True, op_block_list=["InstanceNormalization",
                                                                                  "Resize", "Range", "Mod"])
    # the converter appends its input casts at the end of the node list; ONNX wants them first
    OnnxModel.graph_topological_sort(half.graph, is_deterministic=True)
    return half


# --- int8 --------------------------------------------------------------------------------------
def _calibration_images(folder: str | Path | None, g: LoadedGenerator, limit: int = 64) -> list[np.ndarray]:
    from .images import is_image_file, load_rgb

    folder = Path(folder)  # type: ignore[arg-type]
    if not folder.is_dir():
        raise ConfigError(f"--calibration {folder} is not a folder; give a folder of images like the model's inputs")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))[:limit]
    m = size_multiple(g.net)
    side = max(m, g.cfg.train.size // m * m)
    images = []
    for p in files:
        try:
            images.append(_prepare(load_rgb(p), side))
        except Exception as exc:  # noqa: BLE001 - one bad file does not spoil calibration
            log.warning("skipping calibration image %s: %s", p, exc)
    if len(images) < 2:
        raise ConfigError(f"--calibration {folder} holds {len(images)} readable image(s); int8 calibration needs "
                          f"at least 2 (a few dozen is better)")
    return images


def _prepare(rgb: np.ndarray, side: int) -> np.ndarray:
    from .images import resize, to_float

    return to_float(resize(rgb, side))[None]


def to_int8(model, images: list[np.ndarray], noise: bool, quiet: bool = False) -> tuple[Any, dict[str, float]]:
    """Static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on
    ``images``; returns the model and its report: speed-up over fp32 and PSNR against fp32 outputs."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    seeds = np.arange(len(images), dtype=np.int64)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(range(len(images)))

        def get_next(self):
            i = next(self.items, None)
            if i is None:
                return None
            feed = {"image": images[i]}
            if noise:
                feed["noise_seed"] = seeds[i: i + 1]
            return feed

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(src))
        with _quiet_logging():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            # Convolutions only, and not the output layer; ranges from the 99.999th percentile. Measured
            # on a trained ResNet-9 (CPU, AVX2; docs/benchmarks.md): transposed convolutions in int8
            # are slower than in fp32 here, the output convolution in int8 costs ~1.5 dB of PSNR for
            # ~5 % of speed, and percentile ranges gain ~1 dB over min/max.
            convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"], nodes_to_exclude=convs[-1:],
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        q = onnx.load(str(dst))
    fp32_sess, int8_sess = _session(model), _session(q)
    psnrs, t32, t8 = [], 0.0, 0.0
    for i, image in enumerate(images):
        feed32, feed8 = _feed(fp32_sess, image, seeds[i: i + 1]), _feed(int8_sess, image, seeds[i: i + 1])
        if i == 0:  # warm-up
            fp32_sess.run(None, feed32), int8_sess.run(None, feed8)
        t = time.perf_counter()
        a = fp32_sess.run(["output"], feed32)[0]
        t32 += time.perf_counter() - t
        t = time.perf_counter()
        b = int8_sess.run(["output"], feed8)[0]
        t8 += time.perf_counter() - t
        psnrs.append(psnr(a, b))
    return q, {"speedup": t32 / t8, "psnr": float(np.mean(psnrs)), "psnr_min": float(np.min(psnrs)),
               "images": len(images), "fp32_s": t32 / len(images), "int8_s": t8 / len(images)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images in [-1, 1] (peak-to-peak 2)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)


@contextlib.contextmanager
def _quiet_logging():
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the quantiser prints its progress and warns per tensor
            yield
    finally:
        root.setLevel(level)
