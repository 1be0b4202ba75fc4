import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import one_line_error

from translate import __version__
from translate.cli import cli

TINY_ARGS = ["--size", "32", "--workers", "0", "--set", "ngf=8", "--set", "ndf=8", "--set", "synthetic_count=4",
             "--set", "n_samples=2", "--set", "log_every=1"]


def invoke(*args):
    result = CliRunner().invoke(cli, ["-q", *map(str, args)])
    return result.exit_code, result.output  # stdout and stderr, interleaved




def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "translate", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
    code, text = invoke("train", "--help")
    assert code == 0 and "--resume" in text and "--data" in text


def test_missing_data_folder(tmp_path):
    one_line_error(*invoke("train", "--data", tmp_path / "nope"), "nope", "--data")


def test_missing_trainB(tmp_path, unpaired_dir):
    import shutil

    shutil.rmtree(unpaired_dir / "trainB")
    one_line_error(*invoke("train", "--data", unpaired_dir, "--run-dir", tmp_path / "r"), "trainB")


def test_empty_folder(tmp_path):
    (tmp_path / "d" / "trainA").mkdir(parents=True)
    (tmp_path / "d" / "trainB").mkdir()
    one_line_error(*invoke("train", "--data", tmp_path / "d", "--run-dir", tmp_path / "r"), "no images")


def test_mismatched_pairs(tmp_path, paired_dir):
    (paired_dir / "A" / "1.png").rename(paired_dir / "A" / "other.png")
    one_line_error(*invoke("train", "--data", paired_dir, "--run-dir", tmp_path / "r"), "other.png",
                          "file name")


def test_too_many_corrupt_images(tmp_path, unpaired_dir):
    for i in range(4):
        (unpaired_dir / "trainB" / f"bad{i}.jpg").write_bytes(b"\xff\xd8 truncated")
    one_line_error(*invoke("train", "--data", unpaired_dir, "--run-dir", tmp_path / "r"), "unreadable",
                          "trainB")


def test_unknown_model_and_option():
    code, text = invoke("train", "--model", "stylegan")
    assert code == 2 and "Traceback" not in text and "stylegan" in text
    one_line_error(*invoke("train", "--set", "lamda_cycle=3"), "lamda_cycle")
    code, text = invoke("train", "--frobnicate")
    assert code == 2 and "No such option" in text


def test_bad_values(tmp_path):
    one_line_error(*invoke("train", "--model", "pix2pix", "--size", "48"), "power-of-two")
    one_line_error(*invoke("train", "--batch-size", "0"), "--batch-size")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_absent():
    one_line_error(*invoke("train", "--device", "cuda", "--steps", "1"), "CUDA", "--device cpu")


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: [1, 2\n")
    one_line_error(*invoke("train", "--config", bad), "bad.yaml", "YAML")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sizee: 64\n")
    one_line_error(*invoke("train", "--config", unknown), "unknown.yaml", "sizee")
    one_line_error(*invoke("train", "--config", tmp_path / "none.yaml"), "none.yaml")


def test_config_file_then_command_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: pix2pix\nsteps: 5\nlambda_l1: 50\nsize: 64\n")
    run = tmp_path / "run"
    code, text = invoke("train", "--config", cfg, *TINY_ARGS, "--steps", "1", "--run-dir", run)
    assert code == 0, text
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["steps"] == 1 and saved["train"]["size"] == 32 and saved["model"]["lambda_l1"] == 50


def test_run_dir_holding_a_run_and_resume(tmp_path):
    run = tmp_path / "run"
    code, text = invoke("train", "--model", "cyclegan", *TINY_ARGS, "--steps", "2", "--run-dir", run)
    assert code == 0, text
    one_line_error(*invoke("train", *TINY_ARGS, "--steps", "2", "--run-dir", run), "already holds a run",
                          "--resume")
    code, text = invoke("train", "--resume", run, "--steps", "3")
    assert code == 0, text
    assert (run / "latest").read_text().strip() == "step-00000003"
    one_line_error(*invoke("train", "--resume", run, "--size", "64"), "size", "new run")
    one_line_error(*invoke("train", "--resume", tmp_path / "nothing"), "no config.json")


def test_interrupted_run_checkpoints_and_resumes(tmp_path):
    import os
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "translate", "-q", "train", *TINY_ARGS, "--steps", "400", "--run-dir", str(run),
           "--set", "checkpoint_every=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"translate train --resume {run}" in err
    step = int((run / "latest").read_text().strip().split("-")[1])
    assert 0 < step < 400
    code, text = invoke("train", "--resume", run, "--steps", str(step + 2))
    assert code == 0, text
    assert (run / "latest").read_text().strip() == f"step-{step + 2:08d}"
    assert os.path.exists(run / "loss_curves.png")
