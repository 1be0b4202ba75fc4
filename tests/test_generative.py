"""Noise-to-image families (dcgan, cgan): data, networks, stabilisers, training, sampling, export."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import one_line_error, resumed_equals_whole
from translate.cli import cli
from translate.data import arrays
from translate.nn import dcgan
from translate.nn.layers import (ConditionalBatchNorm2d, MinibatchDiscrimination, MinibatchStdDev, NoiseInjection,
                                 PixelNorm, equalize_lr, hash_normal, set_noise_mode)

GEN_TINY = ["--size", "16", "--batch-size", "8", "--set", "ngf=8", "--set", "ndf=8", "--set", "workers=0",
            "--set", "log_every=1", "--set", "sample_every=2", "--set", "checkpoint_every=2", "--set", "n_samples=10"]


def invoke(*args):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result.exit_code, result.output


def glyphs(n_per_class: int = 12, size: int = 16, n_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny labelled images: class k is a bright bar at a class-specific place, with noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n_classes * n_per_class, size, size), dtype=np.uint8)
    y = np.repeat(np.arange(n_classes), n_per_class)
    for i, k in enumerate(y):
        if k % 2:
            x[i, :, k * size // n_classes: k * size // n_classes + 2] = 255
        else:
            x[i, k * size // n_classes: k * size // n_classes + 2, :] = 255
    return x, y


@pytest.fixture
def digits(tmp_path: Path) -> Path:
    x, y = glyphs()
    path = tmp_path / "glyphs.npz"
    np.savez(path, x=x, y=y)
    return path


# --- data -----------------------------------------------------------------------------------------
def test_holdout_is_the_last_tenth_of_each_class():
    y = np.repeat(np.arange(3), 10)
    train, held = arrays.holdout_split(y, len(y))
    assert len(held) == 3 and list(held) == [9, 19, 29]
    assert len(set(train) | set(held)) == 30 and not set(train) & set(held)


def test_array_layouts_and_values(tmp_path):
    x, y = glyphs(2)
    np.savez(tmp_path / "nchw.npz", images=x[:, None].astype(np.float32) / 255.0, labels=y)
    s = arrays.load_image_set(tmp_path / "nchw.npz")
    assert s.images.shape == (20, 16, 16, 1) and s.images.dtype == np.uint8
    assert np.abs(s.images[..., 0].astype(int) - x).max() <= 1
    assert s.classes == tuple(str(i) for i in range(10)) and s.labelled
    np.savez(tmp_path / "bad.npz", x=x, y=y[:5])
    with pytest.raises(arrays.DataError, match="20 images but 5 labels"):
        arrays.load_image_set(tmp_path / "bad.npz")
    np.savez(tmp_path / "nokey.npz", pixels=x)
    with pytest.raises(arrays.DataError, match="no image array"):
        arrays.load_image_set(tmp_path / "nokey.npz")


def _idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def write_idx_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = glyphs(size=28)
    _idx(folder / "train-images-idx3-ubyte.gz", x)
    _idx(folder / "train-labels-idx1-ubyte.gz", y)
    _idx(folder / "t10k-images-idx3-ubyte.gz", x[:20])
    _idx(folder / "t10k-labels-idx1-ubyte.gz", y[:20])
    return folder


def test_idx_files_as_published(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist")
    s = arrays.load_image_set(folder, classes=tuple("abcdefghij"))
    assert len(s) == 120 and s.channels == 1 and s.classes[1] == "b"
    train, test = arrays.split(s)
    assert len(train) == 120 and len(test) == 20  # the published test split is the held-out one
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x09" + b"\1" * 3))
    with pytest.raises(arrays.DataError, match="truncated"):
        arrays.load_image_set(folder)


def test_class_folders_and_plain_folders(tmp_path):
    for k, name in enumerate(["cat", "dog"]):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((20, 24), 40 * k + i, np.uint8), "L").save(tmp_path / "pets" / name / f"{i}.png")
    s = arrays.load_image_set(tmp_path / "pets")
    assert s.kind == "classes" and s.classes == ("cat", "dog") and list(s.labels) == [0, 0, 0, 1, 1, 1]
    assert s.channels == 1  # all grayscale
    flat = arrays.load_image_set(tmp_path / "pets" / "cat")
    assert flat.kind == "folder" and not flat.labelled and len(flat) == 3


# --- layers ---------------------------------------------------------------------------------------
def test_pixel_norm_and_minibatch_features():
    x = torch.randn(6, 8, 3, 3) * 5
    assert torch.allclose(PixelNorm()(x).pow(2).mean(dim=1), torch.ones(6, 3, 3), atol=1e-4)
    std = MinibatchStdDev(4)
    same = std(torch.ones(4, 2, 3, 3))
    varied = std(torch.randn(4, 2, 3, 3))
    assert same.shape == (4, 3, 3, 3) and same[:, 2].abs().max() < 1e-3 and varied[:, 2].min() > 0.3
    assert std(torch.randn(6, 2, 3, 3)).shape == (6, 3, 3, 3)  # a group of 3 divides 6
    assert std(torch.randn(1, 2, 3, 3))[:, 2].abs().max() == 0
    mbd = MinibatchDiscrimination(2 * 3 * 3, kernels=5)
    close = mbd(torch.ones(4, 2, 3, 3))[:, 2:, 0, 0]
    far = mbd(torch.randn(4, 2, 3, 3) * 10)[:, 2:, 0, 0]
    assert mbd(torch.ones(4, 2, 3, 3)).shape == (4, 7, 3, 3)
    assert torch.allclose(close, torch.full_like(close, 3.0)) and far.max() < 1.0  # 3 identical neighbours


def test_conditional_batch_norm_modulates_per_class():
    cbn = ConditionalBatchNorm2d(4, 3)
    with torch.no_grad():
        cbn.gamma.weight[1] = 2.0
        cbn.beta.weight[2] = 5.0
    x = torch.randn(3, 4, 5, 5)
    out = cbn(x, torch.tensor([0, 1, 2]))
    assert out[1].std() > 1.5 * out[0].std()
    assert (out[2].mean() - out[0].mean()) > 4.5


def test_equalized_lr_stores_unit_weights_and_scales_at_run_time():
    net = equalize_lr(torch.nn.Sequential(torch.nn.Conv2d(64, 32, 3), torch.nn.Linear(10, 5)))
    conv = net[0]
    stored = conv.parametrizations.weight.original
    assert abs(float(stored.detach().std()) - 1.0) < 0.05
    assert torch.allclose(conv.weight, stored * (2 ** 0.5 / (64 * 9) ** 0.5))
    assert "parametrizations.weight.original" in "".join(net.state_dict())


def test_noise_injection_modes():
    layer = NoiseInjection(3, strength=0.5)
    x = torch.zeros(2, 3, 4, 4)
    assert not torch.equal(layer(x), layer(x))  # fresh noise each call, also in eval
    set_noise_mode(layer, "fixed", torch.tensor([1, 2]))
    a, b = layer(x), layer(x)
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    set_noise_mode(layer, "off")
    assert torch.equal(layer(x), x)
    z = hash_normal(4, 64, 64, torch.arange(4), 0, torch.device("cpu"))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


# --- networks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,base,k", [(28, 7, 2), (32, 4, 3), (64, 4, 4), (16, 4, 2)])
def test_dcgan_resolutions(size, base, k):
    assert dcgan.levels_for(size) == (base, k)
    g, d = dcgan.DCGANGenerator(16, size, 1, ngf=8), dcgan.DCGANDiscriminator(size, 1, ndf=8)
    img = g(torch.randn(3, 16))
    assert img.shape == (3, 1, size, size) and img.abs().max() <= 1
    assert d(img).shape == (3,)


def test_dcgan_follows_radford():
    g, d = dcgan.DCGANGenerator(100, 64, 3), dcgan.DCGANDiscriminator(64, 3)
    kinds = lambda net: {type(m).__name__ for m in net.modules()}  # noqa: E731
    assert "Linear" not in kinds(g) | kinds(d)  # no fully connected hidden layers
    assert not any("Pool" in k for k in kinds(g) | kinds(d))  # strided convolutions, no pooling
    assert {"ConvTranspose2d", "BatchNorm2d", "ReLU"} <= kinds(g) and "LeakyReLU" not in kinds(g)
    assert {"Conv2d", "BatchNorm2d", "LeakyReLU"} <= kinds(d) and "ReLU" not in kinds(d)
    assert isinstance(d.down[d.k - 1][1], torch.nn.Identity)  # no batch norm on D's input layer
    assert sum(p.numel() for p in g.parameters()) == 3_576_704  # the PyTorch DCGAN example's G at 64 px


def test_progressive_growing_fades_in_each_resolution():
    g = dcgan.DCGANGenerator(8, 32, 1, ngf=4, progressive=True)
    d = dcgan.DCGANDiscriminator(32, 1, ndf=4, progressive=True)
    z = torch.randn(2, 8)
    assert [dcgan.progressive_stage(s, 0, 3, 10) for s in (0, 9, 15, 20, 35, 40, 55, 100)] == \
        [0, 0, 0.5, 1, 1.5, 2, 2.5, 3]
    g.stage = 0.0  # 4x4: the image is made of 8x8 blocks
    img = g(z)
    assert img.shape == (2, 1, 32, 32) and torch.equal(img, img[..., ::8, ::8].repeat_interleave(8, 2)
                                                       .repeat_interleave(8, 3))
    g.stage = 1.5  # 8 -> 16 half faded in: 2x2 blocks
    img = g(z)
    assert torch.equal(img, img[..., ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))
    for stage in (0.0, 0.5, 1.0, 2.5, 3.0):
        d.stage = stage
        assert d(img).shape == (2,)
    reals = torch.rand(2, 1, 32, 32)
    assert torch.equal(dcgan.progressive_reals(reals, 3.0, 4, 3), reals)
    low = dcgan.progressive_reals(reals, 0.0, 4, 3)
    assert torch.allclose(low[..., :8, :8], reals[..., :8, :8].mean(dim=(2, 3), keepdim=True).expand(2, 1, 8, 8))


# --- training ---------------------------------------------------------------------------------------
def test_cgan_trains_on_an_array_file_and_records_its_classes(digits, tmp_path):
    run = tmp_path / "run"
    code, text = invoke("train", "--model", "cgan", "--data", digits, "--steps", 4, "--run-dir", run, *GEN_TINY)
    assert code == 0, text
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["channels"] == 1 and cfg["model"]["n_classes"] == 10
    assert json.loads((run / "classes.json").read_text()) == [str(i) for i in range(10)]
    grid = Image.open(run / "samples" / "step-00000004.png")
    assert grid.height > 2 * 16  # a row of fakes above a row of reals


def test_cgan_needs_labels_and_dcgan_needs_data(tmp_path):
    from conftest import write_image

    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png")
    code, text = invoke("train", "--model", "cgan", "--data", tmp_path / "imgs", "--steps", 1, *GEN_TINY)
    one_line_error(code, text, "cgan needs class labels", "DIR/<class>/")
    code, text = invoke("train", "--model", "dcgan", "--steps", 1)
    one_line_error(code, text, "--pair mnist", "--data")
    code, text = invoke("train", "--model", "dcgan", "--data", tmp_path / "imgs", "--size", 18, "--steps", 1,
                        "--run-dir", tmp_path / "run")
    one_line_error(code, text, "--size must be a multiple of 4")


def test_dcgan_on_a_folder_of_colour_images(tmp_path):
    from conftest import write_image

    for i in range(10):
        write_image(tmp_path / "imgs" / f"{i}.jpg", size=(30, 20), seed=i)
    run = tmp_path / "run"
    code, text = invoke("train", "--model", "dcgan", "--data", tmp_path / "imgs", "--steps", 2, "--run-dir", run,
                        *GEN_TINY)
    assert code == 0, text
    assert json.loads((run / "config.json").read_text())["model"]["channels"] == 3


def test_every_stabiliser_at_once_trains_and_resumes_exactly(digits, tmp_path):
    """Kill after 3 steps, resume to 6: the weights equal an uninterrupted 6-step run's."""
    opts = {"model": "cgan", "data": str(digits), "steps": 6, "size": 16, "batch_size": 8, "ngf": 8, "ndf": 8,
            "workers": 0, "checkpoint_every": 1, "sample_every": 100, "minibatch_std": 2,
            "minibatch_discrimination": 4, "equalized_lr": True, "pixel_norm": True, "noise_injection": 0.1,
            "dropout": 0.2, "pool_size": 6, "progressive": True, "progressive_steps": 1, "swap_every": 2,
            "swap_steps": 1, "d_optimizer": "sgd", "noisy_labels": True, "label_flip": 0.1, "instance_noise": 0.1,
            "latent": "spherical", "ema": 0.9, "conditioning": "cbn", "aux_classifier": 0.5}
    weights = resumed_equals_whole(tmp_path, opts)
    assert any(k.startswith("swap.") for k in weights)


def test_aux_classifier_adds_a_classification_loss_on_both_sides():
    from translate.config import CGANConfig, TrainConfig
    from translate.models.conditional import CGAN

    torch.manual_seed(0)
    train = TrainConfig(model="cgan", size=16, batch_size=4)
    plain = CGAN(CGANConfig(channels=1, n_classes=3, ngf=8, ndf=8), train)
    aux = CGAN(CGANConfig(channels=1, n_classes=3, ngf=8, ndf=8, aux_classifier=1.0), train)
    assert plain.discriminators["D"].classifier is None and aux.discriminators["D"].classifier is not None
    aux.load_state_dict(plain.state_dict(), strict=False)
    d_plain, d_aux = plain.discriminators["D"], aux.discriminators["D"]
    real, fake, y = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0])
    d_aux(real, y)
    ce = torch.nn.functional.cross_entropy(d_aux.class_logits, y)
    assert torch.allclose(aux.d_score(d_aux, real, fake, y, y), plain.d_score(d_plain, real, fake, y, y) + ce)
    d_aux(fake, y)
    ce = torch.nn.functional.cross_entropy(d_aux.class_logits, y)
    assert torch.allclose(aux.g_score(d_aux, fake, y), plain.g_score(d_plain, fake, y) + ce)


def test_past_swaps_freeze_the_swapped_side_and_restore_it():
    from translate.engine.replay import PastSwaps

    model = torch.nn.Module()
    model.generators = torch.nn.ModuleDict({"G": torch.nn.Linear(2, 2)})
    model.discriminators = torch.nn.ModuleDict({"D": torch.nn.Linear(2, 1)})
    swaps = PastSwaps(every=3, steps=2, history=3, seed=0)
    sides = {}
    for step in range(0, 40):
        for net in (model.generators, model.discriminators):  # "training": every weight moves each step
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(1.0)
        side = swaps.before_step(step, model)
        if side is not None and step == swaps.active["until"] - swaps.steps:
            nets = getattr(model, PastSwaps.SIDES[side])
            past = next(w for s, w in swaps.snapshots if s == swaps.active["source"])[side]
            assert all(torch.equal(v, past[k]) for k, v in nets.state_dict().items())
            sides[step] = side
    assert len(sides) >= 4 and set(sides.values()) == {"G", "D"}
    assert all(step % 3 == 0 and step >= 6 for step in sides)


def test_recipe_stable_sits_under_the_users_options(digits):
    from translate.train import build_config

    cfg = build_config({"model": "cgan", "data": str(digits), "recipe": "stable", "minibatch_std": 8})
    assert cfg.train.label_smoothing == 0.1 and cfg.train.instance_noise == 0.1 and cfg.train.ema == 0.999
    assert cfg.model.minibatch_std == 8 and cfg.model.latent == "spherical" and cfg.train.recipe == "stable"
    assert cfg.model.aux_classifier == 2.0 and cfg.model.class_minibatch_std  # right and diverse
    mine = build_config({"model": "cgan", "data": str(digits), "recipe": "stable", "aux_classifier": 0.5,
                         "class_minibatch_std": False})
    assert mine.model.aux_classifier == 0.5 and not mine.model.class_minibatch_std  # yours win
    hinge = build_config({"model": "dcgan", "data": str(digits), "recipe": "stable", "gan_loss": "hinge"})
    assert hinge.train.label_smoothing == 0.0  # label smoothing needs a target-based loss: left out
    code, text = invoke("train", "--pair", "facades", "--recipe", "stable", "--model", "cgan", "--data", digits)
    assert code != 0


def test_replay_keeps_each_fake_with_its_label():
    from translate.engine.replay import ReplayBuffer

    pool = ReplayBuffer(4, p=0.5, seed=0)
    for step in range(20):
        y = torch.randint(0, 10, (3,))
        x = y.float().view(3, 1, 1, 1).expand(3, 1, 2, 2).clone()  # the image encodes its label
        img, lab = pool(x, y)
        assert torch.equal(img[:, 0, 0, 0], lab.float())


# --- sampling and export ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cgan")
    x, y = glyphs()
    np.savez(root / "glyphs.npz", x=x, y=y, classes=np.array(list("abcdefghij")))
    run = root / "run"
    code, text = invoke("train", "--model", "cgan", "--data", root / "glyphs.npz", "--steps", 2, "--run-dir", run,
                        *GEN_TINY, "--set", "noise_injection=0.1", "--set", "ema=0.5")
    assert code == 0, text
    return run


def test_slerp_walks_the_great_circle():
    from translate.sampling import slerp

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(64), rng.standard_normal(64)
    path = slerp(a, b, np.linspace(0, 1, 5))
    assert np.allclose(path[0], a, atol=1e-5) and np.allclose(path[-1], b, atol=1e-5)
    a, b = a / np.linalg.norm(a) * 8, b / np.linalg.norm(b) * 8
    mid = slerp(a, b, 0.5)[0]
    assert abs(np.linalg.norm(mid) - 8) < 1e-4  # stays on the sphere; a straight line dips inside
    assert np.linalg.norm((a + b) / 2) < 7.5
    assert np.isclose(mid @ a, mid @ b, rtol=1e-4)  # halfway along the arc


def test_sample_grid_classes_and_sequences(cgan_run, tmp_path):
    code, text = invoke("sample", cgan_run, "--n", 20, "--out", tmp_path / "grid.png")
    assert code == 0, text
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (10 * 18 + 2, 2 * 18 + 2)  # one column per class, 16 px images, 2 px gaps
    code, text = invoke("sample", cgan_run, "--n", 20, "--out", tmp_path / "grid.png")
    one_line_error(code, text, "already exists", "--overwrite")
    assert invoke("sample", cgan_run, "--n", 6, "--class", "c", "--out-dir", tmp_path / "seq")[0] == 0
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == [f"{i:04d}.png" for i in range(6)]
    code, text = invoke("sample", cgan_run, "--class", "zebra")
    one_line_error(code, text, "--class 'zebra'", "0-9")
    assert invoke("sample", cgan_run, "--n", 12, "--interpolate", 4, "--out", tmp_path / "walk.png")[0] == 0
    assert Image.open(tmp_path / "walk.png").size == (4 * 18 + 2, 3 * 18 + 2)


def test_export_and_sample_from_onnx_match_the_run(cgan_run, tmp_path):
    import onnx

    out = tmp_path / "g.onnx"
    code, text = invoke("export", cgan_run, "--out", out)
    assert code == 0, text
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["latent", "label", "noise_seed"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["translate.family"] == "cgan" and json.loads(meta["translate.classes"])[2] == "c"
    args = ["--n", 10, "--seed", 5]
    assert invoke("sample", cgan_run, *args, "--out-dir", tmp_path / "torch")[0] == 0
    assert invoke("sample", "--model", out, *args, "--out-dir", tmp_path / "onnx")[0] == 0
    for i in range(10):
        a = np.asarray(Image.open(tmp_path / "torch" / f"{i:04d}.png"), dtype=int)
        b = np.asarray(Image.open(tmp_path / "onnx" / f"{i:04d}.png"), dtype=int)
        assert np.abs(a - b).max() <= 1
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in" / "x.png")
    code, text = invoke("run", tmp_path / "in", tmp_path / "out", "--model", out)
    one_line_error(code, text, "translate sample --model")
    code, text = invoke("export", cgan_run, "--out", tmp_path / "q.onnx", "--int8", "--calibration", tmp_path)
    one_line_error(code, text, "--int8", "latents")


def test_sample_refuses_a_translator_run(tmp_path, tiny):
    from translate.train import build_config, train

    cfg = build_config({**tiny, "steps": 1, "model": "pix2pix"})
    train(cfg, tmp_path / "p2p", quiet=True)
    code, text = invoke("sample", tmp_path / "p2p")
    one_line_error(code, text, "pix2pix run", "translate run")


def test_train_pair_mnist_downloads_the_idx_files_and_trains(tmp_path, monkeypatch):
    """--pair with a labelled set: the four IDX files come from the (local) server, are verified, and
    a cgan trains on them with the class names of the registry."""
    from fileserver import FileServer

    from translate.data import pairs
    from translate.data.download import RemoteFile, sha256_file

    idx = write_idx_folder(tmp_path / "published")
    monkeypatch.setattr("translate.data.download.time.sleep", lambda s: None)
    with FileServer() as server:
        files = tuple(RemoteFile(server.add(f"/mnist/{p.name}", p.read_bytes()), p.name, p.stat().st_size,
                                 sha256_file(p)) for p in sorted(idx.iterdir()))
        ds = pairs.Dataset(name="toymnist", kind="labelled", description="toy digits", licence="t", citation="t",
                           files=files, layout=tuple(f.filename for f in files), layout_note="idx",
                           recipe={"model": "dcgan", "size": 28}, classes=tuple("abcdefghij"))
        monkeypatch.setitem(pairs.DATASETS, ds.name, ds)
        run = tmp_path / "run"
        code, text = invoke("train", "--pair", "toymnist", "--model", "cgan", "--root", tmp_path / "data", "--steps", 2,
                            "--run-dir", run, *GEN_TINY[2:])
    assert code == 0, text
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["size"] == 28 and cfg["train"]["pair"] == "toymnist"  # the recipe's size
    assert json.loads((run / "classes.json").read_text())[0] == "a"


def test_sgd_for_the_discriminator_adam_for_the_generator(digits, tmp_path):
    from translate.engine.trainer import Trainer
    from translate.models import build_model
    from translate.train import build_config

    cfg = build_config({"model": "dcgan", "data": str(digits), "size": 16, "d_optimizer": "sgd", "lr_d": 0.01})
    cfg.model.channels = 1
    trainer = Trainer(build_model(cfg), cfg, device=torch.device("cpu"), total_steps=1,
                      loader_factory=lambda start: iter(()))
    assert isinstance(trainer.opt_D, torch.optim.SGD) and isinstance(trainer.opt_G, torch.optim.Adam)
    assert trainer.opt_D.param_groups[0]["lr"] == 0.01 and trainer.opt_G.param_groups[0]["lr"] == 2e-4


def test_ema_generator_gets_its_own_batch_norm_statistics(digits):
    """Running statistics copied from another set of weights make eval-mode samples garbage;
    after refresh_norm_stats, eval mode matches what the network's own batches give."""
    from translate.models import build_model
    from translate.train import build_config

    cfg = build_config({"model": "cgan", "data": str(digits), "size": 16, "ngf": 8, "ndf": 8})
    cfg.model.channels, cfg.model.n_classes = 1, 10
    model = build_model(cfg)
    g = model.generators["G"]
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(0.01)
    z, y = torch.randn(512, 100), torch.arange(512) % 10
    with torch.no_grad():
        batch_mode = g.train()(z, y)
        stale = g.eval()(z, y)
        model.refresh_norm_stats(g, seed=0, batches=16, batch_size=64)
        fresh = g.eval()(z, y)
    assert (fresh - batch_mode).abs().mean() < (stale - batch_mode).abs().mean() / 10
    assert not g.training
