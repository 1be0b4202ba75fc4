"""ONNX export (verified against torch) and the batch runtime: translate export, translate run, Translator."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import BLOCK_TORCH, TINY, one_line_error, write_image
from PIL import Image

from translate.cli import cli
from translate.export import ExportError, export_generator, read_metadata, torch_reference, verify
from translate.run import load_generator
from translate.runtime import Translator, plan_jobs

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, cwd=None):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result.exit_code, result.output




def _train(root: Path, model: str, **extra) -> Path:
    from translate.train import build_config, train

    opts = {**TINY, "model": model, "steps": 2, "size": 64 if model == "pix2pix" else 32, **extra}
    cfg = build_config(opts)
    run = root / f"{model}-run"
    train(cfg, run, quiet=True)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"cyclegan": _train(root, "cyclegan"), "pix2pix": _train(root, "pix2pix")}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return {"cyclegan": export_generator(runs["cyclegan"], out=out / "c.onnx", quiet=True).path,
            "pix2pix": export_generator(runs["pix2pix"], out=out / "p.onnx", quiet=True).path}


def session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- export ------------------------------------------------------------------------------------
def test_resnet_round_trip_with_dynamic_batch_height_width(runs, exported):
    model = onnx.load(str(exported["cyclegan"]))
    onnx.checker.check_model(model)
    meta = read_metadata(model)
    assert meta["family"] == "cyclegan" and meta["generator"] == "G_AB" and meta["direction"] == "AtoB"
    assert meta["train_size"] == "32" and meta["size_multiple"] == "4" and meta["noise"] == "none"
    assert json.loads(meta["normalisation"])["mean"] == [0.5] * 3
    assert meta["version"] and len(meta["config_hash"]) == 16 and meta["step"] == "2"
    g = load_generator(runs["cyclegan"])
    sess = session(exported["cyclegan"])
    for shape in [(1, 3, 32, 32), (3, 3, 48, 80), (2, 3, 100, 36)]:
        x = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
        got = sess.run(None, {"image": x})[0]
        assert got.shape == shape
        assert np.abs(got - torch_reference(g.net, x, None, False)).max() < 1e-4


def test_second_cyclegan_generator(runs, tmp_path):
    r = export_generator(runs["cyclegan"], generator="G_BA", out=tmp_path / "ba.onnx", quiet=True)
    assert r.metadata["generator"] == "G_BA" and r.metadata["direction"] == "BtoA" and r.max_abs_diff < 1e-3


def test_unet_noise_is_a_seed_input_that_matches_torch(runs, exported):
    sess = session(exported["pix2pix"])
    assert [i.name for i in sess.get_inputs()] == ["image", "noise_seed"]
    meta = read_metadata(onnx.load(str(exported["pix2pix"])))
    assert meta["noise"] == "sample" and meta["size_multiple"] == "64"
    g = load_generator(runs["pix2pix"])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 128)).astype(np.float32)
    seeds = np.array([5, 6], dtype=np.int64)
    a = sess.run(None, {"image": x, "noise_seed": seeds})[0]
    assert np.array_equal(a, sess.run(None, {"image": x, "noise_seed": seeds})[0])  # a seed repeats
    b = sess.run(None, {"image": x, "noise_seed": np.array([7, 8], dtype=np.int64)})[0]
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()  # another seed, other noise (a barely trained net)
    assert np.abs(a - torch_reference(g.net, x, seeds, True)).max() < 1e-4


def test_noise_off(runs, tmp_path):
    r = export_generator(runs["pix2pix"], out=tmp_path / "off.onnx", noise="off", quiet=True)
    sess = session(r.path)
    assert [i.name for i in sess.get_inputs()] == ["image"] and r.metadata["noise"] == "off"
    g = load_generator(runs["pix2pix"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    assert np.abs(sess.run(None, {"image": x})[0] - torch_reference(g.net, x, None, False)).max() < 1e-4


def test_a_model_that_fails_verification_is_not_saved(runs, tmp_path, monkeypatch):
    from translate import export as exp

    real_trace = exp._trace

    def broken(*args, **kw):
        model = real_trace(*args, **kw)
        init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
        w = onnx.numpy_helper.to_array(init).copy()
        w += np.random.default_rng(0).normal(0, w.std(), w.shape).astype(w.dtype)
        init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
        return model

    monkeypatch.setattr(exp, "_trace", broken)
    code, text = invoke("export", runs["cyclegan"], "--out", tmp_path / "m.onnx")
    one_line_error(code, text, "differs from torch by up to", "not saved")
    assert not (tmp_path / "m.onnx").exists() and list(tmp_path.iterdir()) == []


def test_verification_catches_a_broken_model(runs, exported):
    model = onnx.load(str(exported["cyclegan"]))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))  # the largest weight
    w = onnx.numpy_helper.to_array(init).copy()
    w += np.random.default_rng(0).normal(0, w.std(), w.shape).astype(w.dtype)  # (a scale would be normalised away)
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    g = load_generator(runs["cyclegan"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ExportError, match="differs from torch by up to"):
        verify(model, g.net, [(x, None)], False, 1e-3, "fp32")


def test_export_cli_and_its_refusals(runs, tmp_path):
    out = tmp_path / "m.onnx"
    code, text = invoke("export", runs["cyclegan"], "--out", out)
    assert code == 0, text
    assert "max abs diff" in text and "onnx.checker passed" in text and out.is_file()
    one_line_error(*invoke("export", runs["cyclegan"], "--out", out), "already exists", "--overwrite")
    assert invoke("export", runs["cyclegan"], "--out", out, "--overwrite")[0] == 0
    one_line_error(*invoke("export", runs["cyclegan"], "--generator", "G", "--out", tmp_path / "x.onnx"),
                   "G_AB, G_BA")
    one_line_error(*invoke("export", runs["cyclegan"], "--out", tmp_path / "x.pt"), ".onnx")
    one_line_error(*invoke("export", tmp_path / "nope"), "does not exist")
    one_line_error(*invoke("export", runs["cyclegan"], "--int8", "--out", tmp_path / "q.onnx"), "--calibration")


def test_default_output_name(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("export", runs["cyclegan"])[0] == 0
    assert (tmp_path / "export" / "cyclegan-run-G_AB.onnx").is_file()


def test_fp16_export(runs, tmp_path):
    r = export_generator(runs["cyclegan"], out=tmp_path / "h.onnx", fp16=True, quiet=True)
    model = onnx.load(str(r.path))
    assert r.metadata["precision"] == "fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    producers = {o: n for n in model.graph.node for o in n.output}
    assert norms and all(producers[n.input[0]].op_type == "Cast" and
                         producers[n.input[0]].attribute[0].i == onnx.TensorProto.FLOAT for n in norms)
    x = np.zeros((1, 3, 32, 32), np.float32)
    assert session(r.path).run(None, {"image": x})[0].dtype == np.float32


def test_int8_export_reports_speed_and_psnr(runs, tmp_path):
    calib = tmp_path / "calib"
    for i in range(4):
        write_image(calib / f"{i}.png", size=(48, 40), seed=i)
    r = export_generator(runs["cyclegan"], out=tmp_path / "q.onnx", int8=True, calibration=calib, quiet=True)
    assert r.metadata["precision"] == "int8" and r.int8["images"] == 4
    assert np.isfinite(r.int8["psnr"]) and r.int8["psnr"] > 10 and r.int8["psnr_min"] <= r.int8["psnr"]
    ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    t = Translator(r.path)
    assert t(Image.new("RGB", (40, 30))).size == (40, 30)


# --- run ---------------------------------------------------------------------------------------
def make_inputs(root: Path) -> Path:
    inp = root / "in"
    write_image(inp / "a.png", size=(40, 30))
    write_image(inp / "b.jpg", size=(33, 47), seed=1)
    write_image(inp / "nested" / "deeper" / "c.png", size=(64, 64), mode="L", seed=2)
    write_image(inp / "nested" / "d.png", size=(20, 24), mode="RGBA", seed=3)
    write_image(inp / "nested" / "e.gif", size=(30, 30), mode="P", seed=4)
    write_image(inp / "f16.png", size=(36, 28), mode="I;16", seed=5)
    (inp / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (inp / "notes.txt").write_text("not an image")
    return inp


def test_run_over_a_folder(exported, tmp_path):
    inp = make_inputs(tmp_path)
    out = tmp_path / "out"
    code, text = invoke("run", inp, out, "--model", exported["cyclegan"], "--batch-size", "2")
    assert code == 1, text  # one bad file: reported, the rest done
    assert "broken.jpg" in text and "failed" in text
    expected = {"a.png": (40, 30), "b.jpg": (33, 47), "nested/deeper/c.png": (64, 64), "nested/d.png": (20, 24),
                "nested/e.png": (30, 30), "f16.png": (36, 28)}
    for rel, size in expected.items():
        img = Image.open(out / rel)
        assert img.size == size and img.mode == ("RGBA" if rel == "nested/d.png" else "RGB"), rel
    # transparency is carried through: the network sees RGB, the output gets the input's alpha back
    assert np.array_equal(np.asarray(Image.open(out / "nested/d.png"))[..., 3],
                          np.asarray(Image.open(inp / "nested/d.png"))[..., 3])
    assert not (out / "notes.txt").exists() and not (out / "nested" / "broken.jpg").exists()
    assert not list(out.rglob(".*.tmp*"))  # atomic writes leave no temporaries
    assert "translated 6 image(s)" in text and "1 failed" in text
    expected_a = Translator(exported["cyclegan"], provider="cpu")(Image.open(inp / "a.png"))
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(expected_a))
    import stat

    assert stat.S_IMODE((out / "a.png").stat().st_mode) & 0o044  # readable by others, as a plain open() gives


def test_run_resumes_and_overwrites_only_when_asked(exported, tmp_path):
    inp = tmp_path / "in"
    for i in range(3):
        write_image(inp / f"{i}.png", seed=i)
    out = tmp_path / "out"
    assert invoke("run", inp, out, "--model", exported["cyclegan"])[0] == 0
    (out / "1.png").unlink()
    mine = out / "0.png"
    mine.write_bytes(b"user's own file")
    code, text = invoke("run", inp, out, "--model", exported["cyclegan"])
    assert code == 0 and "2 already there" in text
    assert (out / "1.png").is_file() and mine.read_bytes() == b"user's own file"
    assert invoke("run", inp, out, "--model", exported["cyclegan"], "--overwrite")[0] == 0
    assert Image.open(mine).size == (40, 40)


def test_run_formats_list_file_and_single_image(exported, tmp_path):
    inp = tmp_path / "in"
    write_image(inp / "x" / "a.png")
    write_image(inp / "y" / "b.png", seed=1)
    assert invoke("run", inp, tmp_path / "jpg", "--model", exported["cyclegan"], "--format", "jpg")[0] == 0
    assert Image.open(tmp_path / "jpg" / "x" / "a.jpg").format == "JPEG"
    listing = tmp_path / "list.txt"
    listing.write_text("in/x/a.png\n# a comment\n\nin/y/b.png\n")
    assert invoke("run", listing, tmp_path / "listed", "--model", exported["cyclegan"])[0] == 0
    assert (tmp_path / "listed" / "x" / "a.png").is_file() and (tmp_path / "listed" / "y" / "b.png").is_file()
    assert invoke("run", inp / "x" / "a.png", tmp_path / "one.png", "--model", exported["cyclegan"])[0] == 0
    assert Image.open(tmp_path / "one.png").size == (40, 40)
    assert invoke("run", inp / "x" / "a.png", tmp_path / "dir", "--model", exported["cyclegan"])[0] == 0
    assert (tmp_path / "dir" / "a.png").is_file()


def test_run_refusals(exported, tmp_path, monkeypatch):
    inp = tmp_path / "in"
    write_image(inp / "a.png")
    one_line_error(*invoke("run", inp, inp / "out", "--model", exported["cyclegan"]), "inside the input folder")
    one_line_error(*invoke("run", inp, inp, "--model", exported["cyclegan"]), "inside the input folder")
    one_line_error(*invoke("run", tmp_path / "nope", tmp_path / "o", "--model", exported["cyclegan"]),
                   "does not exist")
    monkeypatch.chdir(tmp_path)
    one_line_error(*invoke("run", inp, tmp_path / "o"), "translate export")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", bad), "bad.onnx")
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", exported["cyclegan"], "--resize", "big"),
                   "--resize")


def test_bare_run_uses_the_newest_export(exported, tmp_path, monkeypatch):
    import os
    import shutil

    monkeypatch.chdir(tmp_path)
    (tmp_path / "export").mkdir()
    shutil.copy(exported["pix2pix"], tmp_path / "export" / "old.onnx")
    shutil.copy(exported["cyclegan"], tmp_path / "export" / "new.onnx")
    os.utime(tmp_path / "export" / "old.onnx", (1, 1))
    write_image(tmp_path / "in" / "a.png")
    result = CliRunner().invoke(cli, ["run", "in", "out"])
    assert result.exit_code == 0, result.output
    assert "export/new.onnx" in result.output


def test_run_from_a_checkpoint_and_repeatable_seeds(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in" / "a.png", size=(64, 64))
    for out in ("s1", "s2"):
        assert invoke("run", "in", out, "--checkpoint", runs["pix2pix"], "--seed", "3")[0] == 0
    assert list((tmp_path / "export").glob("pix2pix-run-step-*.onnx"))
    a1, a2 = (np.asarray(Image.open(tmp_path / o / "a.png")) for o in ("s1", "s2"))
    assert np.array_equal(a1, a2)
    assert invoke("run", "in", "s3", "--checkpoint", runs["pix2pix"])[0] == 0  # fresh noise
    assert invoke("run", "in", "s4", "--checkpoint", runs["pix2pix"])[0] == 0
    a3, a4 = (np.asarray(Image.open(tmp_path / o / "a.png")).astype(int) for o in ("s3", "s4"))
    assert np.abs(a3 - a4).max() > 0


def test_exif_orientation_is_honoured(exported, tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    (tmp_path / "in").mkdir()
    img.save(tmp_path / "in" / "r.jpg", exif=exif)
    assert invoke("run", tmp_path / "in", tmp_path / "out", "--model", exported["cyclegan"])[0] == 0
    assert Image.open(tmp_path / "out" / "r.jpg").size == (20, 40)


# --- the runtime -------------------------------------------------------------------------------
def _local_model(tmp_path: Path) -> Path:
    """A ResNet generator without normalisation and with one block: its receptive field (about
    23 px from the centre) fits in the tiles' margin, so tiling must not change its output."""
    from translate.export import _set_metadata, _trace
    from translate.nn.generators import ResnetGenerator

    torch.manual_seed(0)
    net = ResnetGenerator(ngf=8, n_blocks=1, norm="none").eval()
    model = _trace(net, False, 17, 32)
    _set_metadata(model, {"size_multiple": "4", "train_size": "32", "noise": "none"})
    path = tmp_path / "local.onnx"
    onnx.save(model, str(path))
    return path


def test_tiling_equals_untiled_output(tmp_path):
    path = _local_model(tmp_path)
    rgb = np.random.default_rng(0).integers(0, 255, (301, 423, 3), dtype=np.uint8)
    whole = Translator(path, tile=0).translate_arrays([rgb])[0]
    t = Translator(path, tile=256)
    assert t.needs_tiling(301, 423)
    tiled = t.translate_arrays([rgb])[0]
    assert tiled.shape == whole.shape == (301, 423, 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # rounding at most


def test_translator_api(exported):
    from translate import Translator as Exported

    assert Exported is Translator
    t = Translator(exported["cyclegan"], provider="cpu")
    out = t(Image.new("RGB", (50, 30), "red"))
    assert isinstance(out, Image.Image) and out.size == (50, 30)
    outs = t.batch([Image.new("RGB", (16, 16)), Image.new("L", (21, 17)), np.zeros((16, 16, 3), np.uint8)])
    assert [o.size for o in outs] == [(16, 16), (21, 17), (16, 16)]
    assert t.metadata["family"] == "cyclegan" and t.provider == "cpu"
    rgba = Image.new("RGBA", (12, 10), (255, 0, 0, 0))
    rgba.putpixel((3, 3), (0, 255, 0, 255))
    out = t(rgba)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], np.asarray(rgba)[..., 3])
    t2 = Translator(exported["pix2pix"], seed=1)
    img = Image.new("RGB", (64, 64), "blue")
    assert np.array_equal(np.asarray(t2(img)), np.asarray(t2(img)))


def test_serving_imports_neither_torch_nor_torchvision(exported, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    code = (BLOCK_TORCH +
            "from translate import Translator\nfrom PIL import Image\n"
            f"t = Translator({str(exported['cyclegan'])!r})\nt(Image.new('RGB', (8, 8)))\n"
            "from translate.cli import cli\n"
            f"cli(['-q', 'run', {str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, '--model', "
            f"{str(exported['cyclegan'])!r}], standalone_mode=False)\n"
            "bad = [m for m in ('torch', 'torchvision') if m in sys.modules]\nassert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "a.png").is_file()


def test_plan_jobs_mirrors_structure(tmp_path):
    write_image(tmp_path / "in" / "x" / "a.webp", fmt="WEBP")
    write_image(tmp_path / "in" / "b.pgm", mode="L")
    jobs = {j.key: j.dst for j in plan_jobs(tmp_path / "in", tmp_path / "o")}
    assert jobs == {"x/a.webp": tmp_path / "o" / "x" / "a.webp", "b.pgm": tmp_path / "o" / "b.png"}


def test_the_plain_onnxruntime_example_in_docs_works(exported, tmp_path, monkeypatch):
    import re
    import shutil

    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "export").mkdir()
    shutil.copy(exported["pix2pix"], tmp_path / "export" / "facades-pix2pix.onnx")
    write_image(tmp_path / "labels.png", size=(70, 50))
    exec(compile(code, "deploy.md", "exec"), {})
    assert Image.open(tmp_path / "photo.png").size == (70, 50)


def test_tiny_and_thin_images(exported):
    t = Translator(exported["cyclegan"], provider="cpu")
    for size in [(1, 1), (2, 9), (40, 3), (5, 5)]:
        assert t(Image.new("RGB", size, "green")).size == size
    tp = Translator(exported["pix2pix"], provider="cpu")
    assert tp(Image.new("RGB", (3, 70))).size == (3, 70)


def test_plans_that_would_lose_files_are_refused(exported, tmp_path):
    inp = tmp_path / "in"
    write_image(inp / "a.png")
    write_image(inp / "a.jpg", seed=1)
    one_line_error(*invoke("run", inp, tmp_path / "o", "--model", exported["cyclegan"], "--format", "png"),
                   "a.jpg", "a.png", "both be written")
    one_line_error(*invoke("run", inp / "a.png", inp, "--model", exported["cyclegan"]), "would replace an input")
    listing = tmp_path / "l.txt"
    listing.write_text("in/a.png\nin/a.png\n")  # duplicates are one job
    code, text = invoke("run", listing, tmp_path / "lo", "--model", exported["cyclegan"])
    assert code == 0 and "translated 1 image(s)" in text
    (tmp_path / "file").write_text("x")
    one_line_error(*invoke("run", inp, tmp_path / "file", "--model", exported["cyclegan"]), "is a file")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    one_line_error(*invoke("run", bad, tmp_path / "o2", "--model", exported["cyclegan"]), "UTF-8")
    (tmp_path / "missing.txt").write_text("nope/a.png\n")
    one_line_error(*invoke("run", tmp_path / "missing.txt", tmp_path / "o3", "--model", exported["cyclegan"]),
                   "relative paths are read from the list's own folder")
    one_line_error(*invoke("run", inp, tmp_path / "o4", "--model", exported["cyclegan"], "--tile", "64"), "--tile")
    one_line_error(*invoke("run", inp, tmp_path / "o5", "--model", exported["cyclegan"], "--workers", "0"),
                   "--workers")


def test_images_of_many_sizes_do_not_pile_up(exported, tmp_path, monkeypatch):
    """Memory stays bounded: with every image a different size, batches go out part-filled rather
    than waiting for the end of the folder."""
    from translate import runtime

    for i in range(24):
        write_image(tmp_path / "in" / f"{i:02d}.png", size=(20, 20 + i), seed=i)
    t = Translator(exported["cyclegan"], provider="cpu", batch_size=4)
    decoded, first_inference_after = [], []
    real_decode, real_run = runtime.decode, t.run_same_shape

    def decode(path, resize=None):
        decoded.append(path)
        return real_decode(path, resize)

    def run_same_shape(arrays, keys=None):
        first_inference_after.append(len(decoded))
        return real_run(arrays, keys)

    monkeypatch.setattr(runtime, "decode", decode)
    t.run_same_shape = run_same_shape
    s = runtime.run_jobs(t, runtime.plan_jobs(tmp_path / "in", tmp_path / "out"), workers=2, progress=False)
    assert s.done == 24 and not s.failed
    assert first_inference_after[0] < 24  # inference began long before the last image was decoded


def test_a_batch_that_fails_is_retried_one_image_at_a_time(exported, tmp_path):
    from translate import runtime

    for i in range(4):
        write_image(tmp_path / "in" / f"{i}.png", seed=i)
    t = Translator(exported["cyclegan"], provider="cpu", batch_size=4)
    real = t.run_same_shape

    def fragile(arrays, keys=None):
        if len(arrays) > 1:
            raise MemoryError("out of memory")
        if keys and keys[0] == "2.png":
            raise RuntimeError("this one is too big")
        return real(arrays, keys)

    t.run_same_shape = fragile
    s = runtime.run_jobs(t, runtime.plan_jobs(tmp_path / "in", tmp_path / "out"), progress=False)
    assert s.done == 3 and [p.name for p, _ in s.failed] == ["2.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "3.png"]


def test_tensorrt_tiles_every_side_past_its_engine_profile(exported, monkeypatch):
    """TensorRT's engine takes sides up to the tile size only: wide images are tiled there even when
    their area is below the tile's (checked without a GPU by naming the provider)."""
    from translate import runtime

    assert not Translator(exported["cyclegan"], provider="cpu", tile=1024).needs_tiling(720, 1280)  # area rule
    real = runtime.create_session
    monkeypatch.setattr(runtime, "create_session", lambda *a, **kw: (real(*a[:1], "cpu")[0], "tensorrt"))
    t = Translator(exported["cyclegan"], tile=1024)
    assert t.needs_tiling(720, 1280) and not t.needs_tiling(720, 1000)
    assert Translator(exported["cyclegan"], tile=0).tile == runtime.TRT_MAX_SIDE
