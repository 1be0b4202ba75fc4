"""The family contract: a new model family, written here in the test file alone and registered,
trains, checkpoints, resumes, exports, translates, evaluates and reports through the public CLI,
with no edit anywhere else in the package. And a checkpoint folder copied anywhere on its own
still exports, evaluates and translates."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from translate.cli import cli
from translate.models import FAMILIES, register
from translate.models.base import GANModel, Translation


@dataclass
class SharpenConfig:
    """The family's own options (every family config has a gan_loss)."""

    gan_loss: str = "lsgan"
    width: int = 8
    lambda_l1: float = 10.0


class Sharpen(GANModel):
    """A paired translator as small as a family gets: a two-layer generator, a conditional
    two-layer discriminator, least squares + L1."""

    family = "sharpen-test"
    config_class = SharpenConfig
    data = "paired"

    @classmethod
    def translations(cls, cfg) -> list[Translation]:
        return [Translation("AtoB", "G", "A")]

    @classmethod
    def check_config(cls, cfg, need) -> None:
        need(cfg.model.width >= 1, "width must be at least 1")

    def __init__(self, cfg: SharpenConfig, train) -> None:
        super().__init__(cfg, train)
        w = cfg.width
        self.generators = nn.ModuleDict({"G": nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
                                                            nn.Conv2d(w, 3, 3, padding=1), nn.Tanh())})
        self.discriminators = nn.ModuleDict({"D": nn.Sequential(nn.Conv2d(6, w, 4, 2, 1), nn.LeakyReLU(0.2),
                                                                nn.Conv2d(w, 1, 3, padding=1))})

    def discriminator_loss(self, batch, fakes, backward):
        src, tgt = batch["A"], batch["B"]
        fake = fakes["fake"] if fakes is not None else self.generators["G"](src).detach()
        loss = self.d_score(self.discriminators["D"], torch.cat([src, tgt], 1), torch.cat([src, fake], 1))
        backward(loss)
        return {"loss_D": loss.detach()}

    def generator_loss(self, batch, backward):
        src, tgt = batch["A"], batch["B"]
        fake = self.generators["G"](src)
        gan = self.g_score(self.discriminators["D"], torch.cat([src, fake], 1))
        l1 = self.cfg.lambda_l1 * F.l1_loss(fake, tgt)
        backward(gan + l1)
        return {"loss_G": gan.detach(), "loss_L1": l1.detach()}, {"fake": fake.detach()}

    @torch.no_grad()
    def sample(self, batch):
        return {"real_A": batch["A"], "fake_B": self.generators["G"](batch["A"]), "real_B": batch["B"]}


@pytest.fixture
def sharpen():
    register(Sharpen)
    yield Sharpen
    FAMILIES.pop(Sharpen.family)


def invoke(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


TRAIN = ["--model", "sharpen-test", "--size", "32", "--workers", "0", "--set", "synthetic_count=8",
         "--set", "sample_every=2", "--set", "checkpoint_every=2", "--set", "width=4"]


def test_a_family_defined_in_a_test_file_works_through_the_whole_cli(sharpen, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    invoke("train", *TRAIN, "--steps", "6", "--run-dir", "whole")
    # the same run stopped after step 2 (the API's stop_at), then resumed through the CLI
    from translate.train import build_config, train

    cfg = build_config({"model": "sharpen-test", "size": 32, "workers": 0, "synthetic_count": 8, "sample_every": 2,
                        "checkpoint_every": 2, "width": 4, "steps": 6})
    train(cfg, Path("stopped"), quiet=True, stop_at=2)
    out = invoke("train", "--resume", "stopped")
    assert "resumed stopped from step-00000002" in out and "done: step 6 of 6" in out
    a, b = (load_file(f"{r}/step-00000006/weights.safetensors") for r in ("whole", "stopped"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    out = invoke("export", "whole", "--out", "sharpen.onnx")
    assert "exported sharpen-test G (AtoB, step 6, fp32)" in out
    from PIL import Image

    Path("in").mkdir()
    Image.new("RGB", (40, 24), (200, 30, 90)).save("in/x.png")
    invoke("run", "in", "out", "--model", "sharpen.onnx")
    assert Image.open("out/x.png").size == (40, 24)

    out = invoke("eval", "whole", "--no-fid", "--n", "4")
    assert "sharpen-test" in out and "AtoB" in out and "PSNR" in out
    scores = json.loads(Path("whole/eval.json").read_text())
    assert scores["results"]["AtoB"]["n"] == 4 and 0 <= scores["results"]["AtoB"]["ssim"] <= 1
    invoke("report", "whole", "--gallery", "2")
    assert Path("whole/report.html").stat().st_size > 1000


def test_an_unknown_family_lists_the_registered_ones(sharpen):
    result = CliRunner().invoke(cli, ["train", "--model", "nope"])
    assert result.exit_code != 0 and "sharpen-test" in result.output and "cyclegan" in result.output


def test_a_checkpoint_folder_copied_on_its_own_exports_evaluates_and_translates(tmp_path, tiny, monkeypatch):
    from translate.train import build_config, train

    train(build_config({**tiny, "model": "pix2pix", "steps": 2}), tmp_path / "run", quiet=True)
    alone = tmp_path / "elsewhere" / "step-00000002"
    shutil.copytree(tmp_path / "run" / "step-00000002", alone)
    assert (alone / "config.json").is_file()
    shutil.rmtree(tmp_path / "run")  # nothing of the run is left but the copied folder
    monkeypatch.chdir(tmp_path)
    out = invoke("export", alone, "--out", "alone.onnx")
    assert "step 2" in out
    invoke("eval", alone, "--no-fid", "--n", "2")
    assert (tmp_path / "elsewhere" / "eval-step-00000002.json").is_file()
    Path("in").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 200, 30)).save("in/a.png")
    invoke("run", "in", "out", "--checkpoint", alone)
    assert Path("out/a.png").is_file()


def test_a_generative_checkpoint_folder_samples_on_its_own(tmp_path):
    import numpy as np

    from translate.train import build_config, train

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), y=np.arange(40) % 4)
    cfg = build_config({"model": "cgan", "data": str(tmp_path / "d.npz"), "size": 16, "steps": 2, "batch_size": 8,
                        "ngf": 8, "ndf": 8, "workers": 0})
    train(cfg, tmp_path / "run", quiet=True)
    alone = tmp_path / "copy" / "step-00000002"
    shutil.copytree(tmp_path / "run" / "step-00000002", alone)
    shutil.rmtree(tmp_path / "run")
    assert json.loads((alone / "classes.json").read_text()) == ["0", "1", "2", "3"]
    invoke("sample", alone, "--n", "8", "--class", "2", "--out", tmp_path / "twos.png")
    assert (tmp_path / "twos.png").is_file()
