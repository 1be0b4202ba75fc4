# Set-up and everyday commands. `make demo` and `make test` each do the whole set-up first.
PYTHON ?= python3
VENV ?= .venv
# The PyTorch build to install; override for another platform, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup demo test test-all bench web-deps gpu-wheels clean

$(BIN)/translate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install -e ".[dev]"
	touch $@

setup: $(BIN)/translate

## Train pix2pix on the embedded synthetic data (a few minutes on 2 CPU cores).
demo: setup
	$(BIN)/translate train

## onnxruntime-web (npm, the version translate web pins) in build/, for the browser tests and benchmarks.
web-deps: setup
	$(BIN)/python -c "from translate.serve.web import local_ort_web; print(local_ort_web(install=True))"

## The test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

## Everything, including the slow end-to-end checks on ../shared/datasets.
test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/train_speed.py --json bench/results/train_speed.json

## The wheels the GPU machine lacks, into the git-ignored .whl/, checked against the 64 MiB a device call
## carries (bench/gpu_wheels.py); then run bash bench/gpu_check.sh there with .whl carried (docs/benchmarks.md).
gpu-wheels:
	$(PYTHON) bench/gpu_wheels.py --dest .whl

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
