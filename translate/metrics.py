"""Quality metrics for generated images: one small function per number.

The digit scores judge samples with the project's own digit classifier (:mod:`translate.classifier`),
never with the networks being trained: a Frechet distance between classifier features of fakes
and reals, the share of conditioned samples that look like the digit asked for, and how the
samples spread over the classes (mode collapse shows as missing or dominant classes).

NumPy only at import; functions that run a network import torch themselves.
"""
from __future__ import annotations

from typing import Any

import numpy as np


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


def digit_scores(fake, real, classifier, fake_labels: np.ndarray | None = None) -> dict[str, Any]:
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
    return scores
