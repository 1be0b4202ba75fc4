from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Caches the tests fill (real-image features, classifiers) go to a temporary folder, never
    to the user's ~/.cache/translate."""
    before = os.environ.get("TRANSLATE_CACHE")
    os.environ["TRANSLATE_CACHE"] = str(tmp_path_factory.mktemp("translate-cache"))
    yield
    if before is None:
        os.environ.pop("TRANSLATE_CACHE", None)
    else:
        os.environ["TRANSLATE_CACHE"] = before


def write_image(path: Path, size=(40, 40), mode="RGB", seed=0, fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = rng.integers(0, 65535, (h, w), dtype=np.uint16)
        Image.fromarray(arr).save(path)
        return path
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def unpaired_dir(tmp_path: Path) -> Path:
    root = tmp_path / "unpaired"
    for i in range(5):
        write_image(root / "trainA" / f"{i}.png", seed=i)
    for i in range(3):
        write_image(root / "trainB" / f"{i}.jpg", seed=10 + i)
    return root


@pytest.fixture
def aligned_dir(tmp_path: Path) -> Path:
    root = tmp_path / "aligned"
    for i in range(4):
        write_image(root / "train" / f"{i}.jpg", size=(80, 40), seed=i)
    return root


@pytest.fixture
def paired_dir(tmp_path: Path) -> Path:
    root = tmp_path / "paired"
    for i in range(4):
        write_image(root / "A" / f"{i}.png", seed=i)
        write_image(root / "B" / f"{i}.jpg", seed=20 + i)
    return root


TINY = {"ngf": 8, "ndf": 8, "size": 32, "workers": 0, "log_every": 1, "sample_every": 2, "checkpoint_every": 2,
        "n_samples": 2, "synthetic_count": 8}


@pytest.fixture
def tiny() -> dict:
    """Options for a network small enough to train a few steps in about a second."""
    return dict(TINY)


# prepended to a fresh interpreter's code: any import of torch or torchvision fails (the serving path needs neither)
BLOCK_TORCH = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
               "            raise ImportError(f'{name} is blocked')\n"
               "sys.meta_path.insert(0, Block())\n")


def resumed_equals_whole(tmp_path: Path, opts: dict, steps: int = 6, stop_at: int = 3) -> dict:
    """Train ``opts`` for ``steps`` steps in one go, and again stopped after ``stop_at`` and resumed:
    assert both end with the same weights, bit for bit; returns them."""
    import torch

    from translate.engine.checkpoint import load_checkpoint
    from translate.models import config_from_dict
    from translate.train import build_config, load_run_config, train

    cfg = build_config(opts)
    train(cfg, tmp_path / "whole", quiet=True)
    train(config_from_dict(cfg.to_dict()), tmp_path / "part", quiet=True, stop_at=stop_at)
    train(load_run_config(tmp_path / "part"), tmp_path / "part", resume=True, quiet=True)
    wa, sa, _ = load_checkpoint(tmp_path / "whole")
    wb, sb, _ = load_checkpoint(tmp_path / "part")
    assert sa["step"] == sb["step"] == steps and set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    return wa


def one_line_error(code: int, text: str, *fragments: str) -> str:
    """Assert a CLI result is a failure reported on exactly one "error:" line holding ``fragments``."""
    assert code != 0, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]
