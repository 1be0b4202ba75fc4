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


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "facades").is_dir(), reason="../shared/datasets/facades not present")
def test_train_pair_facades_on_the_shared_copy(tmp_path, monkeypatch):
    """The issue's end-to-end check: `translate train --pair facades --root ../shared/datasets --steps 20 --size 64`
    finds the data as it is (no download) and trains with the facades recipe."""
    import json

    from click.testing import CliRunner

    from translate.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["-q", "train", "--pair", "facades", "--root", str(SHARED), "--steps", "20",
                                      "--size", "64"])
    assert result.exit_code == 0, result.output
    cfg = json.loads((tmp_path / "checkpoints" / "facades-pix2pix" / "config.json").read_text())
    assert cfg["train"]["data"] == str((SHARED / "facades").resolve()) and cfg["model"]["direction"] == "BtoA"
    assert (tmp_path / "checkpoints" / "facades-pix2pix" / "step-00000020").is_dir()
    assert not (SHARED / "downloads").exists()


@pytest.mark.skipif(not (SHARED / "facades_unpaired").is_dir(), reason="../shared/datasets not present")
def test_shared_facades_verify_as_named_sets():
    from translate.data import pairs

    for name in ("facades", "facades_unpaired"):
        folder, problems, notes = pairs.verify(pairs.get(name), SHARED, quiet=True)
        assert folder == SHARED / name and problems == [], problems
