"""A stop signal sent to the whole process group (Ctrl-C in a terminal, SLURM, ``kill -- -PGID``)
reaches the loader workers too; training must still finish its step, checkpoint and stop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import TINY_ARGS, invoke

ROOT = Path(__file__).resolve().parents[1]


def _last_step(metrics: Path) -> int:
    if not metrics.exists():
        return 0
    rows = [line for line in metrics.read_text().splitlines() if line.strip()]
    try:
        return int(json.loads(rows[-1])["step"]) if rows else 0
    except ValueError:  # a row being written
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_process_group_with_loader_workers_checkpoints_and_resumes(tmp_path, sig):
    run = tmp_path / "run"
    args = list(TINY_ARGS)
    args[args.index("--workers") + 1] = "1"  # one loader worker process
    cmd = [sys.executable, "-m", "translate", "-q", "train", *args, "--steps", "400", "--run-dir", str(run),
           "--set", "checkpoint_every=1000"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own group, as a job under a scheduler
    try:
        deadline = time.time() + 120
        while time.time() < deadline and _last_step(run / "metrics.jsonl") < 3 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        os.killpg(proc.pid, sig)  # the training process and its loader worker alike
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "error:" not in err and f"translate train --resume {run}" in err
    step = int((run / "latest").read_text().strip().split("-")[1])
    assert 3 <= step < 400
    code, text = invoke("train", "--resume", run, "--steps", str(step + 2))
    assert code == 0, text
    assert (run / "latest").read_text().strip() == f"step-{step + 2:08d}"
