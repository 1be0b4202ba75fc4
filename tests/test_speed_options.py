"""Speed options change how the maths runs, not its result: channels_last, torch.compile."""
from __future__ import annotations

import json

import pytest
import torch

from translate.config import RunConfig
from translate.train import build_config, train


def translations(run_dir) -> dict[str, torch.Tensor]:
    """Each trained generator's outputs for one fixed input batch."""
    from translate.run import open_checkpoint

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        return {name: g.net.eval()(x) for name, g in open_checkpoint(run_dir).generators().items()}


def assert_same_training(tmp_path, tiny, model: str, **option) -> None:
    """The same run with and without ``option`` computes the same losses and gradient norms, and
    its generators translate alike. (Only the first step is compared tightly: Adam's first steps
    move every weight by about the learning rate whatever its gradient's size, so rounding in
    near-zero gradients - those of a bias before an instance norm are zero in exact arithmetic -
    turns into visible weight differences that the losses then carry.)"""
    opts = dict(tiny, model=model, steps=3, device="cpu", dropout=0.0)
    train(build_config(opts), tmp_path / "eager", quiet=True)
    train(build_config(dict(opts, **option)), tmp_path / "fast", quiet=True)
    rows = [[json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("eager", "fast")]
    for k, v in rows[0][0].items():
        if k.startswith(("loss", "grad_norm")):
            assert rows[1][0][k] == pytest.approx(v, rel=1e-3), k
    a, b = translations(tmp_path / "eager"), translations(tmp_path / "fast")
    assert a.keys() == b.keys()  # checkpoints of either load into the same networks
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0.05, msg=k)


@pytest.mark.parametrize("model", ["cyclegan", "pix2pix"])
def test_channels_last_trains_the_same_networks(tmp_path, tiny, model):
    assert_same_training(tmp_path, tiny, model, channels_last=True)


def test_channels_last_defaults_to_cuda_only():
    assert RunConfig().train.channels_last is None  # None: on for CUDA, off for the CPU (measured slower there)


@pytest.mark.slow  # inductor compiles C++ for the CPU: about a minute on two cores
def test_compile_trains_the_same_networks(tmp_path, tiny):
    assert_same_training(tmp_path, tiny, "pix2pix", compile=True)
