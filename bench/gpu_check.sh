#!/usr/bin/env bash
# One prepared check of every CUDA path (bench/gpu_check.py has the details):
#   bash bench/gpu_check.sh OUTDIR          on the GPU machine, with .whl/ (make gpu-wheels) carried
#   bash bench/gpu_check.sh --cpu OUTDIR    the same sequence at tiny sizes, without a GPU
# It installs the wheels in .whl/ into a temporary folder (pip --no-index --no-deps --target), puts
# the project and that folder on PYTHONPATH and installs nothing else. PYTHON picks the interpreter
# (default python3, the one that holds PyTorch on the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
exec "${PYTHON:-python3}" -u bench/gpu_check.py "$@"
