import pickle

import pytest
import torch

from translate.engine.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from translate.errors import CheckpointError


def save(run, step, keep=3):
    return save_checkpoint(run, step, {"w": torch.full((2,), float(step))}, {"step": step, "betas": (0.5, 0.9)},
                           keep_last=keep)


def test_latest_and_keep_last(tmp_path):
    for step in (10, 20, 30, 40):
        save(tmp_path, step, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00000030", "step-00000040"]
    assert (tmp_path / "latest").read_text().strip() == "step-00000040"
    weights, state, path = load_checkpoint(tmp_path)
    assert state["step"] == 40 and weights["w"][0].item() == 40 and state["betas"] == (0.5, 0.9)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_incomplete_checkpoint_is_ignored(tmp_path):
    save(tmp_path, 10)
    broken = tmp_path / "step-00000020"
    broken.mkdir()  # a crash mid-write would leave only a temp dir, but be defensive anyway
    (tmp_path / "latest").write_text("step-00000020\n")
    assert resolve_checkpoint(tmp_path).name == "step-00000010"


def test_resave_same_step(tmp_path):
    save(tmp_path, 10)
    save_checkpoint(tmp_path, 10, {"w": torch.ones(1)}, {"step": 10})
    weights, _, _ = load_checkpoint(tmp_path)
    assert weights["w"].shape == (1,)


def test_loading_refuses_pickled_objects(tmp_path):
    path = save(tmp_path, 10)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(path / "trainer.pt", "wb") as f:
        pickle.dump({"step": Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_messages(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path)
