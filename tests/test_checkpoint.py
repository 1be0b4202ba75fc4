import errno
import json
import logging
import pickle

import pytest
import torch

from translate.engine import checkpoint as ckpt_mod
from translate.engine.checkpoint import (MANIFEST, list_checkpoints, load_checkpoint, newest_loadable,
                                         resolve_checkpoint, save_checkpoint)
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


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_loading_refuses_pickled_objects_with_a_line_of_its_own(tmp_path, capsys):
    path = save(tmp_path, 10)
    with open(path / "trainer.pt", "wb") as f:
        pickle.dump({"step": Evil()}, f)
    (path / MANIFEST).unlink()  # a checkpoint from before manifests, or one whose manifest was rewritten too
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert "holds Python objects, refused: never unpickled" in msg and str(path) in msg
    assert "weights_only" not in msg and "\n" not in msg
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_a_damaged_checkpoint_is_refused_naming_its_folder(tmp_path, damage):
    path = save(tmp_path, 10)
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x01  # one bit of a weight: safetensors itself would load it without a word
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[:-4]))
    else:
        (path / "trainer.pt").unlink()
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is damaged: .*(sha256|bytes|missing)"):
        load_checkpoint(path)


def test_every_file_of_a_checkpoint_is_in_its_manifest(tmp_path):
    path = save_checkpoint(tmp_path, 5, {"w": torch.ones(3)}, {"step": 5}, extra={"config.json": "{}\n"})
    files = json.loads((path / MANIFEST).read_text())["files"]
    assert sorted(files) == ["config.json", "trainer.pt", "weights.safetensors"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in files.values())


def test_a_checkpoint_without_a_manifest_still_loads_with_a_note(tmp_path, caplog):
    path = save(tmp_path, 10)
    (path / MANIFEST).unlink()
    with caplog.at_level(logging.INFO, logger="translate"):
        weights, state, _ = load_checkpoint(tmp_path)
    assert state["step"] == 10 and "unverified" in caplog.text


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path, caplog):
    for step in (10, 20, 30):
        save(tmp_path, step)
    newest = tmp_path / "step-00000030" / "trainer.pt"
    newest.write_bytes(newest.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING, logger="translate"):
        weights, state, path = newest_loadable(tmp_path)
    assert state["step"] == 20 and path.name == "step-00000020"
    assert "step-00000030 is damaged" in caplog.text and "loses 10 step(s)" in caplog.text
    assert newest_loadable(tmp_path / "empty-run") is None


def test_a_full_disk_keeps_the_last_checkpoint_and_latest(tmp_path, monkeypatch):
    save(tmp_path, 10)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod, "save_file", no_space)
    with pytest.raises(CheckpointError, match="no space left .* the previous checkpoint is untouched"):
        save(tmp_path, 20)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010"]
    assert (tmp_path / "latest").read_text().strip() == "step-00000010"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written folder left
    assert load_checkpoint(tmp_path)[1]["step"] == 10


def test_missing_checkpoint_messages(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path)
