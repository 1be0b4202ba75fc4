"""CUT and FastCUT (models/cut.py, nn/patchnce.py), the ResNet generator's anti-aliasing and feature
taps, and pix2pixHD's multi-scale discriminators and feature matching for pix2pix."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, one_line_error
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from translate.cli import cli
from translate.data import pairs
from translate.errors import ConfigError
from translate.models import build_model
from translate.nn import ResnetGenerator
from translate.nn.discriminators import NLayerDiscriminator, captured_features, downscale
from translate.nn.layers import BlurDownsample, blur_upsample
from translate.nn.patchnce import PatchHeads, PatchNCE, patch_nce_loss, sample_positions
from translate.train import build_config, train


def invoke(*args):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result.exit_code, result.output


# --- PatchNCE ---------------------------------------------------------------------------------------
def test_patch_nce_against_hand_computed_values():
    # one image, three patches; queries identical to their keys: [1, 0], [0, 1], [-1, 0]
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    q = k.clone()
    for t in (1.0, 0.07):
        loss = patch_nce_loss(q, k, batch=1, temperature=t)
        # query i: its positive q_i . k_i = 1; its negatives the other keys (its own slot is masked to -10)
        expected = [math.log(1 + math.exp(-11 / t) + math.exp(-1 / t) + math.exp(-2 / t)),  # negatives 0, -1
                    math.log(1 + math.exp(-11 / t) + 2 * math.exp(-1 / t)),  # negatives 0, 0
                    math.log(1 + math.exp(-2 / t) + math.exp(-1 / t) + math.exp(-11 / t))]  # negatives -1, 0
        assert torch.allclose(loss, torch.tensor(expected), rtol=1e-5, atol=1e-6), (t, loss, expected)
    # a query that matches a negative better than its positive costs more
    q2 = torch.tensor([[0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    assert patch_nce_loss(q2, k, batch=1)[0] > patch_nce_loss(q, k, batch=1)[0] + 5


def test_patch_nce_negatives_from_the_image_or_the_batch():
    # two images of two patches; image 2's keys are image 1's: with batch negatives they join in
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    own = patch_nce_loss(k, k, batch=2, temperature=1.0)
    assert torch.allclose(own, torch.full((4,), math.log(1 + math.exp(-11) + math.exp(-1))))
    both = patch_nce_loss(k, k, batch=2, temperature=1.0, batch_negatives=True)
    # query 0 now also faces key 2 (= its positive, logit 1) and key 3 (logit 0)
    assert torch.allclose(both[0], torch.tensor(math.log(1 + math.exp(-11) + 2 * math.exp(-1) + 1.0)))
    # the keys carry no gradient; the queries do
    q = k.clone().requires_grad_(True)
    kk = k.clone().requires_grad_(True)
    patch_nce_loss(q, kk, batch=2).sum().backward()
    assert kk.grad is None and q.grad is not None


def test_patch_heads_sample_the_same_positions_and_normalise():
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    pos = torch.tensor([7, 0, 19])
    got = sample_positions(feat, pos)
    want = torch.stack([feat[n, :, p // 5, p % 5] for n in range(2) for p in pos.tolist()])
    assert torch.equal(got, want)  # image-major, the same positions in every image
    heads = PatchHeads([3, 8], dim=16)
    out = heads([feat, torch.randn(2, 8, 3, 3)], [pos, torch.tensor([1, 2])])
    assert [o.shape for o in out] == [(6, 16), (4, 16)]
    assert torch.allclose(out[0].norm(dim=1), torch.ones(6), atol=1e-5)
    nce = PatchNCE([3], num_patches=256)  # more patches than positions: all of them
    f = torch.randn(1, 3, 4, 4)
    assert torch.isfinite(nce([f], [f]))


# --- the ResNet generator: taps and anti-aliasing ----------------------------------------------------
@pytest.mark.parametrize("antialias", [False, True])
def test_feature_taps_return_the_layers_asked_for(antialias):
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=4, n_blocks=6, antialias=antialias).eval()
    x = torch.randn(2, 3, 32, 32)
    taps = ["block5", "input", "down2", "down1", "block1"]
    feats = g.encode(x, taps)
    activations, h = [], x  # every layer's output, run by hand
    for layer in g.model:
        h = layer(h)
        activations.append(h)
    for name, f in zip(taps, feats):
        assert torch.equal(f, activations[g.taps[name]]), name
        assert f.shape[1] == g.tap_channels[name]
    assert feats[1].shape[-1] == 38  # the reflection-padded input, as the reference's layer 0
    assert feats[3].shape[-1] == (32 if antialias else 16)  # before the blur-pool / at stride 2
    out, again = g.forward_taps(x, ["down1"])
    assert torch.equal(out, g(x)) and torch.equal(again[0], feats[3])
    calls = []
    g.model[-1].register_forward_hook(lambda *a: calls.append(1))
    g.encode(x, ["block1"])  # the encoder stops at the deepest tap
    assert calls == []
    with pytest.raises(ValueError, match="block7"):
        g.encode(x, ["block7"])


def test_blur_resampling_is_the_anti_aliased_filters():
    x = torch.randn(2, 3, 8, 10)
    a = torch.tensor([1.0, 2.0, 1.0])
    k = (a[:, None] * a[None, :] / 16).expand(3, 1, 3, 3)
    want = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, stride=2, groups=3)
    assert torch.allclose(BlurDownsample(3)(x), want, atol=1e-6)
    assert "kernel" not in BlurDownsample(3).state_dict()  # a constant, not a weight
    # the strided-add computation (training) has the depthwise convolution's gradient too
    xd = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    kd = k.double()
    g = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    fast, = torch.autograd.grad(BlurDownsample(3)(xd), xd, g)
    conv, = torch.autograd.grad(F.conv2d(F.pad(xd, (1, 1, 1, 1), mode="reflect"), kd, stride=2, groups=3), xd, g)
    assert torch.allclose(fast, conv, atol=1e-12)
    odd = torch.randn(1, 3, 7, 9)  # odd sides: the convolution itself
    assert BlurDownsample(3)(odd).shape == (1, 3, 4, 5)
    # upsampling: the [1, 3, 3, 1] transposed blur (x4 gain), edges replicated, cropped to 2x
    b = torch.tensor([1.0, 3.0, 3.0, 1.0])
    ku = (b[:, None] * b[None, :] / 64 * 4).expand(3, 1, 4, 4)
    up = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), ku, stride=2, padding=2, groups=3)
    assert torch.allclose(blur_upsample()(x), up[:, :, 1:-1, 1:-1], atol=1e-6)


def test_antialias_generator_keeps_winograd_and_channels_last_results():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=8, n_blocks=2, antialias=True).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        fast = g(x)
        from translate.nn import set_winograd

        set_winograd(g, False)
        plain = g(x)
        g.to(memory_format=torch.channels_last)
        nhwc = g(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, plain, atol=1e-4) and torch.allclose(nhwc, plain, atol=1e-5)


def test_antialias_is_an_option_of_every_resnet_family():
    cfg = build_config({**TINY, "model": "cyclegan", "antialias": True})
    assert any(isinstance(m, BlurDownsample) for m in build_model(cfg).generators["G_AB"].modules())
    assert not any(isinstance(m, BlurDownsample) for m in build_model(build_config({**TINY})).modules())
    with pytest.raises(ConfigError, match="antialias is an option of the ResNet generators"):
        build_config({**TINY, "model": "pix2pix", "antialias": True})
    with pytest.raises(ConfigError, match="drop upsample=resize"):
        build_config({**TINY, "model": "cut", "upsample": "resize"})
    with pytest.raises(ConfigError, match="nce_layers 'input,block9'"):
        build_config({**TINY, "model": "cut", "generator": "resnet_6blocks", "nce_layers": "input,block9"})


# --- pix2pixHD: multi-scale discriminators, feature matching -----------------------------------------
def test_multi_scale_discriminators_shapes():
    cfg = build_config({**TINY, "model": "pix2pix", "size": 64, "num_D": 3, "n_layers": 2})
    model = build_model(cfg)
    assert list(model.discriminators) == ["D", "D2", "D4"]
    pair = torch.randn(1, 6, 64, 64)
    scales = model._scales(pair)
    assert [s.shape[-1] for s in scales] == [64, 32, 16]
    assert torch.allclose(scales[1], F.avg_pool2d(pair, 3, 2, 1, count_include_pad=False))
    outs = [d(s) for d, s in zip(model.discriminators.values(), scales)]
    assert [o.shape[-1] for o in outs] == [14, 6, 2]  # a PatchGAN's map at each scale
    with pytest.raises(ConfigError, match="num_D=3 at --size 64"):
        build_config({**TINY, "model": "pix2pix", "size": 64, "num_D": 3})


def test_feature_matching_values():
    torch.manual_seed(0)
    cfg = build_config({**TINY, "model": "pix2pix", "size": 64, "num_D": 2, "lambda_feat": 10.0, "lambda_l1": 0})
    model = build_model(cfg)
    batch = {"A": torch.rand(2, 3, 64, 64) * 2 - 1, "B": torch.rand(2, 3, 64, 64) * 2 - 1}
    model.discriminators.requires_grad_(False)
    logs, fakes = model.generator_loss(batch, lambda loss: None)
    real = torch.cat([batch["A"], batch["B"]], 1)
    fake = torch.cat([batch["A"], fakes["fake"]], 1)
    want = 0.0
    for d, r, f in zip(model.discriminators.values(), model._scales(real), model._scales(fake)):
        acts = []  # every LeakyReLU's output, by hand
        for x in (r, f):
            h, out = x, []
            for layer in d.model:
                h = layer(h)
                if isinstance(layer, nn.LeakyReLU):
                    out.append(h.clone())
            acts.append(out)
        assert len(acts[0]) == cfg.model.n_layers + 1
        want += sum(F.l1_loss(a, b).item() for a, b in zip(acts[1], acts[0]))
    want *= 10.0 / 2 * 4 / (cfg.model.n_layers + 1)
    assert logs["loss_G_feat"].item() == pytest.approx(want, rel=1e-4)
    d = NLayerDiscriminator(6, ndf=4, n_layers=3)
    with captured_features(d) as feats:
        d(torch.randn(1, 6, 32, 32))
    assert len(feats) == 4 and not d._forward_hooks and not any(m._forward_hooks for m in d.modules())
    assert downscale(torch.ones(1, 1, 5, 5)).shape[-1] == 3


def test_pix2pix_recipe_hd_trains(tmp_path):
    code, text = invoke("train", "--model", "pix2pix", "--recipe", "hd", "--size", "64", "--steps", "2", "--workers",
                        "0", "--set", "ngf=8", "--set", "ndf=8", "--set", "synthetic_count=4", "--set", "log_every=1",
                        "--set", "n_samples=2", "--run-dir", tmp_path / "hd")
    assert code == 0, text
    cfg = json.loads((tmp_path / "hd" / "config.json").read_text())
    assert (cfg["model"]["num_D"], cfg["model"]["lambda_feat"], cfg["model"]["gan_loss"]) == (2, 10.0, "lsgan")
    rows = [json.loads(line) for line in (tmp_path / "hd" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_D", "loss_D2", "loss_G_feat", "grad_norm/D2"} <= set(rows[-1])
    assert all(math.isfinite(v) for k, v in rows[-1].items() if k.startswith("loss"))


# --- CUT and FastCUT ---------------------------------------------------------------------------------
CUT_TINY = {**TINY, "steps": 6, "checkpoint_every": 2, "sample_every": 3, "num_patches": 16, "nce_dim": 8}


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_cut_trains_and_resumes_exactly(tmp_path, model):
    opts = {**CUT_TINY, "model": model}
    cfg = build_config(opts)
    assert cfg.model.antialias and cfg.model.pool_size == 0 and cfg.model.init == "xavier"
    assert (cfg.model.nce_idt, cfg.model.flip_equivariance) == ((True, False) if model == "cut" else (False, True))
    full = train(cfg, tmp_path / "full", quiet=True)
    assert full["step"] == 6
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    keys = {"loss_D", "loss_G_GAN", "loss_NCE", "grad_norm/G", "grad_norm/F"}
    assert keys | ({"loss_NCE_idt"} if model == "cut" else set()) <= set(rows[-1])
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if k.startswith("loss"))

    build = build_model(build_config(opts))
    stopped = train(build_config(opts), tmp_path / "part", quiet=True, stop_at=3)  # between checkpoints
    assert stopped["step"] == 3
    assert train(build_config(opts), tmp_path / "part", resume=True, quiet=True)["step"] == 6
    a = load_file(str(tmp_path / "full" / "step-00000006" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "step-00000006" / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    heads = [k for k in a if k.startswith("nce.heads.")]  # the projection heads are checkpointed ...
    early = load_file(str(tmp_path / "full" / "step-00000002" / "weights.safetensors"))
    assert heads and not all(torch.equal(a[k], early[k]) for k in heads)  # ... and learn
    state = torch.load(tmp_path / "full" / "step-00000006" / "trainer.pt", weights_only=True)
    n_params = sum(1 for net in build.generator_side().values() for _ in net.parameters())
    assert len(state["opt_G"]["state"]) == n_params  # the heads are in the generator's optimiser


def test_cut_export_run_eval_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, text = invoke("train", "--model", "cut", "--direction", "BtoA", "--steps", "2", "--size", "32",
                        "--workers", "0", "--set", "ngf=8", "--set", "ndf=8", "--set", "synthetic_count=8",
                        "--set", "num_patches=16", "--set", "n_samples=2", "--run-dir", "run")
    assert code == 0, text
    code, text = invoke("export", "run", "--out", "cut.onnx")
    assert code == 0, text
    import onnxruntime as ort

    from translate.export import read_metadata, torch_reference
    from translate.run import load_generator
    from translate.runtime import Translator

    meta = read_metadata(__import__("onnx").load("cut.onnx"))
    assert (meta["family"], meta["generator"], meta["direction"], meta["source"]) == ("cut", "G", "BtoA", "B")
    sess = ort.InferenceSession("cut.onnx", providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 40, 36)).astype(np.float32)
    g = load_generator("run")
    assert not any(k.startswith("nce") for k in g.net.state_dict())  # the heads stay out of the generator
    ours = sess.run(None, {"image": x})[0]
    assert np.abs(ours - torch_reference(g.net, x, None, False)).max() < 1e-4
    out = Translator("cut.onnx")(Image.new("RGB", (30, 22), "green"))
    assert out.size == (30, 22)
    Path("in").mkdir()
    Image.new("RGB", (24, 24), (9, 90, 200)).save("in/a.png")
    assert invoke("run", "in", "out", "--model", "cut.onnx")[0] == 0 and Path("out/a.png").is_file()
    code, text = invoke("eval", "run", "--no-fid", "--n", "4")
    assert code == 0, text
    scores = json.loads(Path("run/eval.json").read_text())["results"]
    assert list(scores) == ["BtoA"] and scores["BtoA"]["n"] == 4
    assert invoke("report", "run", "--gallery", "2")[0] == 0 and Path("run/report.html").is_file()


def test_cut_refuses_paired_data_in_one_line(tmp_path, aligned_dir, paired_dir):
    one_line_error(*invoke("train", "--model", "cut", "--data", aligned_dir, "--run-dir", tmp_path / "r"),
                   "cut trains on unpaired trainA/ + trainB/ folders", "side-by-side AB pairs", "--model pix2pix")
    one_line_error(*invoke("train", "--model", "fastcut", "--data", paired_dir, "--run-dir", tmp_path / "r"),
                   "fastcut trains on unpaired", "A/ + B/")
    # a named paired set: refused before anything is downloaded, pointing at its unpaired copy
    one_line_error(*invoke("train", "--model", "cut", "--pair", "facades", "--root", tmp_path / "nothing"),
                   "facades is a paired data set", "--pair facades_unpaired")
    assert not (tmp_path / "nothing").exists()


def test_data_info_and_pair_recipes_for_cut(monkeypatch, tmp_path, unpaired_dir):
    code, text = invoke("data", "info", "horse2zebra")
    assert code == 0
    rows = [" ".join(row.split()) for row in re.split(r"\n(?=\S)", text)]  # a row and its wrapped lines
    lines = {row.split()[1]: row for row in rows if row.startswith("recipe")}
    assert "--model cyclegan" in lines["(cyclegan)"] and "--set lambda_cycle=10.0" in lines["(cyclegan)"]
    assert "--model cut --size 256 --epochs 400" in lines["(cut)"] and "--set pool_size=0" in lines["(cut)"]
    assert "--model fastcut" in lines["(fastcut)"] and "--set decay_from=0.75" in lines["(fastcut)"]
    monkeypatch.setattr(pairs, "ensure", lambda ds, root, **kw: tmp_path)
    cfg = build_config({"pair": "horse2zebra", "model": "cut"})
    t, m = cfg.train, cfg.model
    assert (t.epochs, t.decay_from, t.batch_size, t.lr, t.beta1, t.beta2) == (400, 0.5, 1, 2e-4, 0.5, 0.999)
    assert (m.gan_loss, m.pool_size, m.lambda_nce, m.nce_idt) == ("lsgan", 0, 1.0, True)
    cfg = build_config({"pair": "horse2zebra", "model": "fastcut"})
    assert (cfg.train.epochs, cfg.train.decay_from, cfg.model.lambda_nce) == (200, 0.75, 10.0)
    assert build_config({"pair": "horse2zebra"}).train.model == "cyclegan"  # the set's own recipe is unchanged
    # without a named set: the presets' schedules; on the embedded scenes: the short demo
    for model, epochs, decay in (("cut", 400, 0.5), ("fastcut", 200, 0.75)):
        t = build_config({"model": model, "data": str(unpaired_dir)}).train
        assert (t.epochs, t.decay_from) == (epochs, decay)
    demo = build_config({"model": "cut"})
    assert demo.train.steps == 400 and demo.train.epochs is None


def test_max_minutes_stops_with_a_checkpoint_and_scores(tmp_path):
    opts = {**TINY, "model": "cut", "steps": 50, "num_patches": 8, "holdout": 2,
            "eval_every": 100, "eval_metric": "l1", "eval_count": 2, "max_minutes": 1e-6}
    summary = train(build_config(opts), tmp_path / "r", quiet=True)
    assert summary["out_of_time"] and not summary["interrupted"] and summary["step"] == 1
    assert (tmp_path / "r" / "latest").read_text().strip() == "step-00000001"
    row = json.loads((tmp_path / "r" / "evals.jsonl").read_text().splitlines()[-1])
    assert summary["train_minutes"] > 0
    assert row["step"] == 1 and row["train_minutes"] == pytest.approx(summary["train_minutes"], abs=1e-3)
