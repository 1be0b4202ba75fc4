"""Regression tests for problems found in review: each would have failed before its fix."""
import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import one_line_error, write_image
from test_cli import TINY_ARGS, invoke
from translate.cli import _one_line
from translate.data import TranslationDataset, detect_layout
from translate.data.folders import _seed
from translate.data.transforms import train_transform
from translate.errors import ConfigError, DataError
from translate.train import build_config, train


def test_cli_data_folder_is_saved_absolute_and_resumable(tmp_path, unpaired_dir, monkeypatch):
    monkeypatch.chdir(unpaired_dir.parent)
    run = tmp_path / "run"
    code, text = invoke("train", "--data", unpaired_dir.name, *TINY_ARGS, "--steps", "1", "--run-dir", run)
    assert code == 0, text
    saved = json.loads((run / "config.json").read_text())["train"]["data"]
    assert saved == str(unpaired_dir.resolve())
    monkeypatch.chdir(tmp_path)  # resumes from anywhere, also when --data is repeated
    code, text = invoke("train", "--resume", run, "--data", unpaired_dir, "--steps", "2")
    assert code == 0, text


def test_signal_mid_step_finishes_the_step_then_checkpoints(tmp_path, tiny, monkeypatch):
    from translate.models.cyclegan import CycleGAN

    opts = dict(tiny, model="cyclegan", steps=6, checkpoint_every=100, pool_size=2)
    train(build_config(opts), tmp_path / "full", quiet=True)

    original = CycleGAN.generator_loss
    calls = []

    def interrupted_loss(self, batch, backward):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C arrives in the middle of step 3
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batch, backward)

    monkeypatch.setattr(CycleGAN, "generator_loss", interrupted_loss)
    summary = train(build_config(opts), tmp_path / "part", quiet=True)
    assert summary["interrupted"] and summary["step"] == 3
    monkeypatch.setattr(CycleGAN, "generator_loss", original)
    train(build_config(opts), tmp_path / "part", resume=True, quiet=True)
    a = load_file(str(tmp_path / "full" / "step-00000006" / "weights.safetensors"))
    b = load_file(str(tmp_path / "part" / "step-00000006" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flip_is_independent_of_the_crop():
    h = w = 40
    x = np.zeros((h, w, 3), np.uint8)
    x[..., 0] = np.arange(w)[None, :]  # column index
    x[..., 1] = np.arange(h)[:, None]  # row index
    tf = train_transform(32, 0, flip=True)
    by_row = {"low": [], "high": []}
    for s in range(400):
        _seed(tf, np.random.default_rng(s))
        out = tf(image=x)["image"]  # normalised to [-1, 1]
        cols = ((out[0, 0] + 1) * 127.5).round()
        row0 = int(((out[1, 0, 0] + 1) * 127.5).round())
        flipped = bool(cols[0] > cols[-1])
        by_row["low" if row0 < 4 else "high"].append(flipped)
    for rows in by_row.values():
        assert 0.3 < np.mean(rows) < 0.7


def test_fp16_overflow_steps_are_not_explosions(tmp_path, tiny):
    cfg = build_config(dict(tiny, model="pix2pix", steps=4, amp="fp16", stop_on_failure=True))
    assert train(cfg, tmp_path / "run", quiet=True)["step"] == 4  # no TrainingFailure


def test_sample_grid_with_fewer_b_than_samples(tmp_path, tiny, unpaired_dir):
    tiny["n_samples"] = 4  # trainA has 5 images, trainB 3, and there is no test split
    cfg = build_config(dict(tiny, data=str(unpaired_dir), steps=2))
    assert train(cfg, tmp_path / "run", quiet=True)["step"] == 2


def test_run_dir_with_config_but_no_checkpoint_can_start_again(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # a run that failed before its first checkpoint
    code, text = invoke("train", *TINY_ARGS, "--steps", "1", "--run-dir", run)
    assert code == 0, text


def test_option_types_are_checked_and_converted():
    assert build_config({"lr": "1e-4"}).train.lr == 1e-4  # YAML reads 1e-4 as a string
    assert build_config({"noisy_labels": "yes"}).train.noisy_labels is True
    with pytest.raises(ConfigError, match="steps must be an int"):
        build_config({"steps": 10.5})
    with pytest.raises(ConfigError, match="batch_size must be an int"):
        build_config({"batch_size": True})
    with pytest.raises(ConfigError, match="in_channels"):
        build_config({"in_channels": 1})
    one_line_error(*invoke("train", "--set", "lr=fast"), "lr must be a float")


def test_resume_validates_and_records_overrides(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", *TINY_ARGS, "--steps", "1", "--run-dir", run)[0] == 0
    one_line_error(*invoke("train", "--resume", run, "--steps", "0"), "--steps")
    one_line_error(*invoke("train", "--resume", run, "--set", "log_every=0"), "intervals")
    assert invoke("train", "--resume", run, "--steps", "2")[0] == 0
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 2


def test_worker_errors_print_one_line():
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                        "call last):\n  File \"x.py\", line 1, in f\ntranslate.errors.DataError: no image in /d "
                        "could be decoded; check the files\n")
    assert _one_line(wrapped) == "no image in /d could be decoded; check the files"


def test_unreadable_file_in_paired_data_drops_its_pair(paired_dir, caplog):
    for i in range(4, 12):
        write_image(paired_dir / "A" / f"{i}.png", seed=i)
        write_image(paired_dir / "B" / f"{i}.jpg", seed=i)
    (paired_dir / "A" / "3.png").write_bytes(b"")
    ds = TranslationDataset(detect_layout(paired_dir), size=32, load_size=36)
    assert len(ds) == 11 and "3.png" in caplog.text


def test_config_path_errors_are_one_line(tmp_path):
    one_line_error(*invoke("train", "--config", tmp_path), "is a folder")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"size: 64 # caf\xe9\n")
    one_line_error(*invoke("train", "--config", bad), "UTF-8")


def test_a_runs_config_json_works_as_a_recipe(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", *TINY_ARGS, "--steps", "1", "--run-dir", run, "--set", "lambda_l1=7")[0] == 0
    code, text = invoke("train", "--config", run / "config.json", "--run-dir", tmp_path / "again")
    assert code == 0, text
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model"]["lambda_l1"] == 7


def test_wasserstein_and_hinge_losses_are_not_halved(tiny):
    from translate.models import build_model

    for kind, factor in (("wgan", 1.0), ("hinge", 1.0), ("lsgan", 0.5)):
        model = build_model(build_config(dict(tiny, model="pix2pix", gan_loss=kind)))
        d = torch.nn.Conv2d(6, 1, 1)
        real, fake = torch.randn(2, 6, 8, 8), torch.randn(2, 6, 8, 8)
        expected = factor * model.adv.d_loss(d(real), d(fake))
        assert torch.allclose(model.d_score(d, real, fake), expected)
