"""Checkpoints: ``RUN/step-<N>/`` directories written atomically, ``RUN/latest`` names the newest.

A step directory holds ``weights.safetensors`` (networks, EMA copies, replay buffers: tensors
only) and ``trainer.pt`` (optimisers, schedulers, gradient scaler, RNG states, step), a plain
structure of tensors, numbers and strings saved with ``torch.save`` and loaded with
``weights_only=True``, so loading never unpickles arbitrary objects.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..fileio import atomic_write_text, fsync_dir

STEP_RE = re.compile(r"^step-(\d+)$")
WEIGHTS = "weights.safetensors"
TRAINER = "trainer.pt"


def step_dirname(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := STEP_RE.match(p.name))
             and (p / WEIGHTS).is_file() and (p / TRAINER).is_file()] if Path(run_dir).is_dir() else []
    return [p for _, p in sorted(found)]


def write_checkpoint_dir(final: Path, weights: dict[str, torch.Tensor], state: dict[str, Any],
                         extra: dict[str, str] | None = None) -> Path:
    """Write ``weights`` and ``state`` (and ``extra`` text files) into the folder ``final``
    atomically: a temporary folder beside it, fsynced, renamed over any previous one."""
    run_dir = final.parent
    tmp = run_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
        torch.save(state, tmp / TRAINER)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving (e.g. a step after a resume, a new best): swap the old one out first
            old = run_dir / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        fsync_dir(run_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def recover_dir(final: Path) -> None:
    """After a crash between the two renames of :func:`write_checkpoint_dir`: put the previous
    folder back if the new one never arrived, else drop the leftover."""
    for old in sorted(final.parent.glob(f".old-{final.name}-*")):
        if not final.exists() and (old / WEIGHTS).is_file() and (old / TRAINER).is_file():
            os.rename(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(run_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
                    keep_last: int = 3) -> Path:
    """Write ``run_dir/step-<step>`` atomically, point ``latest`` at it, keep the newest ``keep_last``."""
    run_dir = Path(run_dir)
    final = write_checkpoint_dir(run_dir / step_dirname(step), weights, state)
    atomic_write_text(run_dir / "latest", final.name + "\n")
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A step directory, or a run directory (its ``latest`` checkpoint)."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run directory (checkpoints/<run>) or a step-<N> folder")
    latest = path / "latest"
    if latest.is_file():
        candidate = path / latest.read_text().strip()
        if (candidate / WEIGHTS).is_file() and (candidate / TRAINER).is_file():
            return candidate
    complete = list_checkpoints(path)
    if complete:
        return complete[-1]
    raise CheckpointError(f"{path} holds no complete checkpoint (no step-<N>/{WEIGHTS}); "
                          f"train first, or point at another run directory")


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Load weights and trainer state safely (safetensors + ``weights_only=True``), on the CPU:
    RNG states must stay there, and ``load_state_dict`` moves the rest where it belongs."""
    ckpt = resolve_checkpoint(path)
    try:
        weights = load_file(str(ckpt / WEIGHTS), device="cpu")
        state = torch.load(ckpt / TRAINER, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise CheckpointError(f"cannot read checkpoint {ckpt}: {exc}; it may be damaged, "
                              f"use an earlier step-<N> folder of the run") from exc
    return weights, state, ckpt
