"""Training from the real facades images in ../shared/datasets, when they are there."""
from pathlib import Path

import pytest

from translate.train import build_config, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "facades").is_dir(), reason="../shared/datasets/facades not present")
@pytest.mark.parametrize("folder,model", [("facades", "pix2pix"), ("facades_unpaired", "cyclegan")])
def test_trains_on_real_facades(tmp_path, folder, model):
    cfg = build_config({"data": str(SHARED / folder), "size": 64, "steps": 3, "workers": 1, "ngf": 16, "ndf": 16,
                        "log_every": 1, "sample_every": 3, "checkpoint_every": 3})
    assert cfg.train.model == model
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["step"] == 3
    assert (tmp_path / "run" / "samples" / "step-00000003.png").is_file()
