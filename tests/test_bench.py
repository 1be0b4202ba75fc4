"""The benchmark scripts run and report what they promise (tiny sizes; the figures are in docs/)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_speed_reports_modes_and_data_waits(tmp_path):
    out = tmp_path / "speed.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "train_speed.py"), "--cases", "pix2pix", "--size", "32",
                          "--iters", "2", "--loader", "--workers", "1", "--modes", "fp32", "amp", "--json", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "waited for data" in run.stdout and "AMP + channels_last" in run.stdout
    report = json.loads(out.read_text())
    fp32, amp = report["results"]
    assert (fp32["mode"], amp["mode"]) == ("fp32", "amp") and amp["channels_last"] and not fp32["channels_last"]
    assert fp32["speedup_vs_fp32"] == 1.0 and amp["speedup_vs_fp32"] > 0
    for r in (fp32, amp):
        assert r["loader"] and 0 <= r["data_wait_share"] < 1 and r["it_per_s"] > 0 and r["peak_mem_gb"] > 0
    assert "pix2pix_max_data_wait" in report["targets"]
