"""bench/gpu_check.sh, the one prepared check for a short GPU window: its CPU mode runs the whole
sequence here, so a broken check is found before a GPU is at hand; its budget logic and the wheel
set it carries are checked without one."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["setup", "pytest", "resume", "export", "speed-pix2pix", "speed-cyclegan"]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _module("gpu_check")
gpu_wheels = _module("gpu_wheels")


def _run(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, dict]:
    out = Path(args[-1])
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    summary = json.loads((out / "gpu_check.json").read_text())
    return proc, summary


def test_cpu_mode_runs_every_stage_and_passes(tmp_path):
    """The same sequence as on the GPU, at tiny sizes: SIGTERM and resume compared bit for bit,
    export checked against torch and served, the speed benchmark through the real loader."""
    out = tmp_path / "out"
    proc, summary = _run("--cpu", str(out), timeout=900)
    stages = summary["stages"]
    assert list(stages) == STAGES, proc.stdout[-3000:]
    failed = {k: v.get("reason") for k, v in stages.items() if v["status"] != "pass"}
    assert not failed, proc.stdout[-3000:]
    assert proc.returncode == 0 and summary["ok"], proc.stderr[-3000:]

    assert stages["pytest"]["counts"]["skipped"] >= 1  # no GPU here: the CUDA tests skip cleanly
    resume = stages["resume"]
    assert resume["verdict"] == "bitwise" and resume["compare"]["resumed_vs_uninterrupted"]["equal"]
    assert resume["signalled_at_step"] <= resume["stopped_at_step"] < resume["steps"]
    assert resume["compare"]["loss_rows_compared_after_the_stop"] > 0
    export = stages["export"]
    assert export["noise_input"]  # the pix2pix dropout noise, keyed by a seed input
    assert export["onnx_vs_torch_cpu"] <= 1e-3 and export["export_max_abs_diff_cpu"] <= 1e-3
    assert export["translate_run"]["outputs"] == export["translate_run"]["inputs"] > 0
    for case in ("pix2pix", "cyclegan"):
        rows = stages[f"speed-{case}"]["results"]
        assert [r["mode"] for r in rows] == ["fp32", "amp"]
        assert all(r["it_per_s"] > 0 and 0 <= r["data_wait_share"] < 1 for r in rows)
    assert {r["case"] for r in summary["figures"]["speed"]} == {"pix2pix", "cyclegan"}

    files = sorted(p.name for p in out.iterdir())  # what comes back from the GPU machine: 8 plain files
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    assert {"gpu_check.json", "gpu_check.log", "pytest_cuda.xml", "resume_samples.png",
            "train_speed_pix2pix.json", "train_speed_cyclegan.json"} <= set(files)
    log = (out / "gpu_check.log").read_text()
    for stage in STAGES:
        assert f"{stage}: PASS" in log


def _dry(tmp_path: Path, *simulate: str) -> tuple[int, dict]:
    out = tmp_path / f"dry{len(list(tmp_path.iterdir()))}"
    args = [a for s in simulate for a in ("--simulate", s)]
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", *args, str(out)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    return proc.returncode, json.loads((out / "gpu_check.json").read_text())


def test_dry_run_plans_every_stage_inside_the_budget(tmp_path):
    code, summary = _dry(tmp_path)
    stages = summary["stages"]
    assert code == 0 and list(stages) == STAGES
    assert all(s["status"] == "pass" and not s.get("dropped") for s in stages.values())
    assert summary["elapsed_s"] <= summary["budget_s"] - gpu_check.RESERVE_S
    assert stages["speed-cyclegan"]["modes"] == ["fp32", "amp", "amp-compile"]
    # pytest runs beside resume and export: the speed stages start when the longer side is done
    side_by_side = max(stages["pytest"]["seconds"], stages["resume"]["seconds"] + stages["export"]["seconds"])
    assert stages["speed-pix2pix"]["started_at_s"] == stages["setup"]["seconds"] + side_by_side
    assert "--_train -q train --model pix2pix --amp auto" in " ".join(stages["resume"]["would_run"])


def test_dry_run_drops_compile_then_skips_what_would_overrun(tmp_path):
    code, summary = _dry(tmp_path, "pytest=300")  # a slow pytest leaves room for fp32 and AMP only
    stages = summary["stages"]
    assert code == 2
    for case in ("pix2pix", "cyclegan"):
        assert stages[f"speed-{case}"]["modes"] == ["fp32", "amp"]
        assert stages[f"speed-{case}"]["dropped"] == ["amp-compile"]

    code, summary = _dry(tmp_path, "setup=200", "pytest=260")
    stages = summary["stages"]
    assert code == 2
    assert stages["speed-cyclegan"]["status"] == "skip" and "budget" in stages["speed-cyclegan"]["reason"]
    assert summary["elapsed_s"] <= summary["budget_s"]

    code, summary = _dry(tmp_path, "setup=460")
    assert code == 2 and all(summary["stages"][s]["status"] == "skip" for s in STAGES[1:])
    assert "are left of the 480 s budget" in summary["stages"]["pytest"]["reason"]


def test_speed_modes_keep_fp32_and_amp_of_every_case_before_compile():
    full = {c: gpu_check.speed_seconds("gpu", c, ["fp32", "amp", "amp-compile"]) for c in ("pix2pix", "cyclegan")}
    eager = {c: gpu_check.speed_seconds("gpu", c, ["fp32", "amp"]) for c in ("pix2pix", "cyclegan")}
    choose = gpu_check.choose_modes
    assert choose("gpu", "pix2pix", full["pix2pix"] + full["cyclegan"]) == ["fp32", "amp", "amp-compile"]
    # room for pix2pix in full, but then not for cyclegan's fp32 and AMP: pix2pix leaves compile out
    assert choose("gpu", "pix2pix", full["pix2pix"] + eager["cyclegan"] - 1) == ["fp32", "amp"]
    assert choose("gpu", "cyclegan", full["cyclegan"] - 1) == ["fp32", "amp"]
    # too little for both cases' fp32 and AMP: the first case still gets them
    assert choose("gpu", "pix2pix", eager["pix2pix"] + 1) == ["fp32", "amp"]
    assert choose("gpu", "cyclegan", eager["cyclegan"] - 1) == []
    assert choose("cpu", "cyclegan", 1000) == ["fp32", "amp"]  # no compile on a CPU


def _cmp(resumed: float | None, repeat: float | None) -> dict:
    def side(rel):
        return {"tensors": 10, "equal": rel is None, "different": 0 if rel is None else 3,
                "first_different": None if rel is None else "weights.generators.G.0.weight", "max_abs": rel or 0.0,
                "max_rel_l2": rel or 0.0}
    return {"resumed_vs_uninterrupted": side(resumed), "uninterrupted_vs_uninterrupted": side(repeat),
            "first_loss_difference": None if resumed is None else 120}


@pytest.mark.parametrize("resumed, repeat, status, verdict", [
    (None, None, "pass", "bitwise"),
    (None, 1e-4, "pass", "bitwise"),  # equal although the runs do not repeat: still bitwise
    (1e-5, None, "fail", "different"),  # the runs repeat bit for bit, the resumed one does not: a resume bug
    (5e-4, 1e-4, "pass", "tolerance"),  # within 10x what two uninterrupted runs differ by
    (5e-3, 1e-4, "fail", "tolerance"),
])
def test_resume_verdict_is_bitwise_or_within_the_stated_tolerance(resumed, repeat, status, verdict):
    result = gpu_check.resume_verdict(_cmp(resumed, repeat), ["reflection_pad2d_backward_cuda"])
    assert (result["status"], result["verdict"]) == (status, verdict)
    text = result.get("note") or result.get("reason")
    if verdict == "tolerance":
        assert "reflection_pad2d_backward_cuda" in text and "10x" in text
    if verdict == "different":
        assert "resume bug" in text and "step 120" in text


def test_compare_counts_every_differing_tensor():
    a = {"w": torch.ones(3), "n": torch.arange(3), "step": 5}
    assert gpu_check._diff(a, dict(a))["equal"]
    d = gpu_check._diff(a, {"w": torch.tensor([1.0, 1.0, 1.5]), "n": torch.arange(3), "step": 6})
    assert not d["equal"] and d["different"] == 2 and d["first_different"] == "step"
    assert d["max_abs"] == pytest.approx(0.5) and d["max_rel_l2"] == pytest.approx(0.5 / (2 + 1.5**2) ** 0.5)
    assert gpu_check._diff(a, {**a, "n": torch.arange(4)})["max_rel_l2"] == float("inf")


def test_a_command_past_its_deadline_is_killed_with_its_process_group(tmp_path):
    check = gpu_check.Check(tmp_path / "out", "cpu")
    try:
        pidfile = tmp_path / "pid"
        started = time.monotonic()
        result = check.run("sleeper", ["bash", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], time.monotonic() + 1)
        assert result.timed_out and time.monotonic() - started < 15
        child = int(pidfile.read_text())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the background sleep went with its group
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the command's background child outlived the timeout")
    finally:
        check.log.close()
        shutil.rmtree(check.scratch, ignore_errors=True)
    assert "sleeper: timed out, killed" in (tmp_path / "out" / "gpu_check.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the GPU mode would run for real")
def test_gpu_mode_without_a_gpu_stops_at_setup_and_says_why(tmp_path):
    proc, summary = _run(str(tmp_path / "out"), timeout=120)
    stages = summary["stages"]
    assert proc.returncode == 1 and not summary["ok"]
    assert stages["setup"]["status"] == "fail" and "no CUDA device" in stages["setup"]["reason"]
    assert all(stages[s]["status"] == "skip" and "set-up failed" in stages[s]["reason"] for s in STAGES[1:])


def _requirements(dist: str) -> set[str]:
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        reqs = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:  # not installed here (onnxscript): its needs are the machine's
        return set()
    out = set()
    for text in reqs:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.add(gpu_wheels.normalise(req.name))
    return out


def _closure(names) -> set[str]:
    seen, todo = set(), [gpu_wheels.normalise(n) for n in names]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += sorted(_requirements(name) - seen)
    return seen


def test_the_wheel_set_is_what_the_gpu_machine_lacks():
    """What the project's core, its train and serve extras and pytest need, less the machine's base
    (torch, torchvision, onnx, onnxscript, onnxruntime and their needs) and the three large packages
    its image has, is exactly what make gpu-wheels carries (typing-extensions also for its version)."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    roots = [Requirement(r).name for r in project["dependencies"] + extras["train"] + extras["serve"]]
    roots += ["pytest", "pytest-timeout"]  # pytest -m cuda
    needed = _closure(roots) - _closure(gpu_wheels.BASE) - _closure(gpu_wheels.FROM_IMAGE)
    carried = set(gpu_wheels.CARRIED)
    assert needed <= carried, f"not carried: {sorted(needed - carried)}"
    assert carried - needed <= _closure(gpu_wheels.BASE), f"carried for nothing: {sorted(carried - needed)}"
    assert not set(gpu_wheels.NOT_CARRIED) & carried


def _fake_wheels(folder: Path, skip: str | None = None, big: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, version in gpu_wheels.CARRIED.items():
        if name != skip:
            path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
            path.write_bytes(b"x" * 1000)
            if name == big:
                os.truncate(path, 70 * 2**20)  # sparse: no disk used


@pytest.mark.parametrize("case, code, message", [
    ("complete", 0, "of the 64 MiB a call may carry"),
    ("missing", 1, "error: missing: pytest"),
    ("too big", 1, "is over the 64 MiB limit"),
])
def test_gpu_wheels_check_names_whats_missing_and_the_size_limit(tmp_path, case, code, message):
    _fake_wheels(tmp_path / "whl", skip="pytest" if case == "missing" else None,
                 big="stringzilla" if case == "too big" else None)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_wheels.py"), "--check-only", "--dest",
                           str(tmp_path / "whl")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr
