"""Checkpoints: ``RUN/step-<N>/`` folders written atomically, ``RUN/latest`` names the newest.

A step folder holds ``weights.safetensors`` (networks, EMA copies, replay buffers: tensors only),
``trainer.pt`` (optimisers, schedulers, gradient scaler, RNG states, step: a plain structure of
tensors, numbers and strings, saved with ``torch.save`` and loaded with ``weights_only=True``, so
loading never unpickles arbitrary objects), whatever text files the caller adds (the run's config
copy, best.json) and, written last, ``manifest.json``: every other file's size and sha256.
Loading checks the manifest, so a flipped byte, a truncated or a missing file is refused instead
of training on (or exporting) damaged weights. Checkpoints from before manifests load as they are.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..fileio import atomic_write_text, fsync_dir

log = logging.getLogger("translate.train")

STEP_RE = re.compile(r"^step-(\d+)$")
WEIGHTS = "weights.safetensors"
TRAINER = "trainer.pt"
MANIFEST = "manifest.json"
LATEST = "latest"


def step_dirname(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(path: Path) -> bool:
    """The two files every checkpoint folder has are there (the manifest is checked on loading)."""
    return (path / WEIGHTS).is_file() and (path / TRAINER).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := STEP_RE.match(p.name))
             and is_complete(p)] if Path(run_dir).is_dir() else []
    return [p for _, p in sorted(found)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint_dir(final: Path, weights: dict[str, torch.Tensor], state: dict[str, Any],
                         extra: dict[str, str] | None = None) -> Path:
    """Write ``weights``, ``state``, ``extra`` text files and, last, the manifest into the folder
    ``final`` atomically: a temporary folder beside it, fsynced, renamed over any previous one. A
    write that fails (a full disk) leaves the previous folder as it was and raises CheckpointError."""
    run_dir = final.parent
    tmp = run_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
        torch.save(state, tmp / TRAINER)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        files = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")
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
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"no space left on the disk of {run_dir} to write {final.name}; the previous "
                                  f"checkpoint is untouched. Free some space, then resume with 'translate train "
                                  f"--resume {run_dir}'") from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def recover_dir(final: Path) -> None:
    """After a crash between the two renames of :func:`write_checkpoint_dir`: put the previous
    folder back if the new one never arrived, else drop the leftover."""
    for old in sorted(final.parent.glob(f".old-{final.name}-*")):
        if not final.exists() and is_complete(old):
            os.rename(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(run_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
                    keep_last: int = 3, extra: dict[str, str] | None = None) -> Path:
    """Write ``run_dir/step-<step>`` atomically, point ``latest`` at it, keep the newest ``keep_last``
    (older ones are removed only once the new one is complete)."""
    run_dir = Path(run_dir)
    final = write_checkpoint_dir(run_dir / step_dirname(step), weights, state, extra)
    atomic_write_text(run_dir / LATEST, final.name + "\n")
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run directory (its ``latest`` checkpoint)."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run directory (checkpoints/<run>) or a step-<N> folder")
    latest = path / LATEST
    if latest.is_file():
        candidate = path / latest.read_text().strip()
        if is_complete(candidate):
            return candidate
    complete = list_checkpoints(path)
    if complete:
        return complete[-1]
    raise CheckpointError(f"{path} holds no complete checkpoint (no step-<N>/{WEIGHTS}); "
                          f"train first, or point at another run directory")


def verify_checkpoint(ckpt: Path) -> bool:
    """Check every file the manifest lists (size and sha256). Raises CheckpointError naming the
    folder and the first damaged file; returns False for a checkpoint without a manifest (written
    before manifests existed), True when it verified."""
    manifest = ckpt / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {ckpt} is damaged: its {MANIFEST} is unreadable; use another "
                              f"checkpoint of the run") from None
    for name, entry in files.items():
        f = ckpt / name
        if not f.is_file():
            problem = f"{name} is missing"
        elif f.stat().st_size != entry["size"]:
            problem = f"{name} has {f.stat().st_size} bytes, not {entry['size']} (truncated or changed)"
        elif _sha256(f) != entry["sha256"]:
            problem = f"{name} does not match its sha256 (changed on disk)"
        else:
            continue
        raise CheckpointError(f"checkpoint {ckpt} is damaged: {problem}; use another checkpoint of the run")
    return True


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Load weights and trainer state safely (manifest checked, safetensors + ``weights_only=True``),
    on the CPU: RNG states must stay there, and ``load_state_dict`` moves the rest where it belongs."""
    ckpt = resolve_checkpoint(path)
    if not verify_checkpoint(ckpt):
        log.info("note: %s has no %s (written by an older version); loading it unverified", ckpt, MANIFEST)
    try:
        weights = load_file(str(ckpt / WEIGHTS), device="cpu")
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise CheckpointError(f"cannot read checkpoint {ckpt}: {WEIGHTS} is damaged ({exc}); use an earlier "
                              f"step-<N> folder of the run") from None
    try:
        state = torch.load(ckpt / TRAINER, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"cannot read checkpoint {ckpt}: {TRAINER} holds Python objects, refused: never "
                              f"unpickled (a checkpoint holds tensors, numbers and strings only)") from None
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {ckpt}: {TRAINER} is damaged ({type(exc).__name__}); use an "
                              f"earlier step-<N> folder of the run") from None
    return weights, state, ckpt


def newest_loadable(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path] | None:
    """``--resume``: the newest checkpoint of ``run_dir`` that verifies and loads, newest first,
    warning for each damaged one it passes over; None when the run has no checkpoint at all.
    Raises CheckpointError when it has checkpoints and none of them loads."""
    found = list_checkpoints(run_dir)
    problems = []
    for ckpt in reversed(found):
        try:
            loaded = load_checkpoint(ckpt)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems:
            lost = int(STEP_RE.match(found[-1].name).group(1)) - int(STEP_RE.match(ckpt.name).group(1))
            log.warning("%s; resuming from %s instead, which loses %d step(s)", problems[0], ckpt.name, lost)
        return loaded
    if problems:
        raise CheckpointError(f"no checkpoint of {run_dir} can be loaded: {problems[0]} (and {len(problems) - 1} "
                              f"more)")
    return None
