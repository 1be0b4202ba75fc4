"""A trainer's checkpoints: what goes into one, what comes back out, and when one is due.

A checkpoint holds everything that makes a resumed run reproduce an uninterrupted one bit for bit:
the networks (each network's own weights, also while a past snapshot plays in its place), the EMA
copies, the replay buffers, the last generator step's fakes, the past-swap snapshots (tensors, in
``weights.safetensors``); optimisers, schedulers, gradient scaler, RNG states, data position,
health history, the best evaluation and the NaN guard (``trainer.pt``). Under torchrun each rank's
own replay buffers, fakes and RNG states are gathered into rank 0's checkpoint.

Saves are due every ``every_steps`` steps and every ``every_minutes`` minutes of wall-clock
(whichever comes first; a slow CPU run or a long GPU epoch never loses more than that), at the
end, and when the run is stopped.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from . import distributed
from .checkpoint import newest_loadable, recover_dir, save_checkpoint, write_checkpoint_dir
from .device import rng_state, set_rng_state
from .monitor import HealthWarning

log = logging.getLogger("translate.train")

Payload = tuple[dict[str, torch.Tensor], dict[str, Any]]


def _rank_tensors(trainer) -> dict[str, torch.Tensor]:
    """What differs between ranks: replay buffers and the last generator step's fakes."""
    tensors = dict(trainer.model.extra_state())
    if trainer.fakes is not None:
        tensors.update({f"fakes.{k}": v for k, v in trainer.fakes.items()})
    return tensors


def weights_of(trainer) -> dict[str, torch.Tensor]:
    w = dict(trainer.model.state_dict())
    w.update(trainer.swaps.own_weights())  # the real networks, not a past snapshot playing in their place
    if trainer.ema is not None:
        w.update({f"ema.{k}": v for k, v in trainer.ema.model.state_dict().items()})
    w.update(trainer.swaps.tensors(trainer.model))
    w.update(_rank_tensors(trainer))
    return w


def state_of(trainer) -> dict[str, Any]:
    return {
        "step": trainer.step,
        "total_steps": trainer.total_steps,
        "data_position": trainer.data_position,
        "opt_G": trainer.opt_G.state_dict(),
        "opt_D": trainer.opt_D.state_dict(),
        "sched_G": trainer.sched_G.state_dict(),
        "sched_D": trainer.sched_D.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": rng_state(),
        "warnings": [[w.step, w.code, w.short, w.message] for w in trainer.monitor.history],
        "swap": trainer.swaps.state(),
        "best": json.dumps(trainer.best),
        "nan_guard": json.dumps(trainer.guard.state()),
        "train_seconds": trainer.train_seconds,
    }


def payload(trainer) -> Payload | None:
    """The weights and state of a checkpoint; with several ranks (a collective: every rank calls
    it), each rank's replay buffers, fakes and random states gathered on rank 0, which alone gets a
    result. Rank ``r`` > 0's tensors are stored under ``rank<r>.``."""
    world = trainer.world
    mine = None
    if world.active:
        mine = {"rng": rng_state(), "tensors": {k: v.detach().cpu() for k, v in _rank_tensors(trainer).items()}}
    everyone = distributed.gather_to_main(mine)
    if not world.main:
        return None
    weights, state = weights_of(trainer), state_of(trainer)
    if world.active:
        for r, theirs in enumerate(everyone[1:], 1):
            weights.update({f"rank{r}.{k}": v for k, v in theirs["tensors"].items()})
        state["world"] = {"size": world.size, "rng": [theirs["rng"] for theirs in everyone[1:]]}
    return weights, state


def restore(trainer, weights: dict[str, torch.Tensor], state: dict[str, Any], source: str,
            own: bool = False) -> None:
    """Put a checkpoint's ``weights`` and ``state`` (from ``source``) back into the trainer; ``own``:
    they are this rank's own (kept in memory), not rank 0's gathered checkpoint."""
    world = trainer.world
    saved_world = world.size if own else int(state.get("world", {}).get("size", 1))
    if saved_world != world.size:
        raise CheckpointError(
            f"{source} was written by {saved_world} training process{'es' * (saved_world > 1)} and this run has "
            f"{world.size}; each keeps its own replay buffer and random state, so resume with the same "
            f"number (torchrun --nnodes=... --nproc_per_node=... giving {saved_world} in all"
            f"{'' if saved_world > 1 else ', or without torchrun'})")
    if world.rank > 0 and not own:  # this rank's own replay buffers, fakes and random state
        prefix = f"rank{world.rank}."
        mine = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        weights = {k: v for k, v in weights.items() if not k.startswith(("pool.", "fakes."))}
        weights.update(mine)
        state = {**state, "rng": state["world"]["rng"][world.rank - 1]}
    model = trainer.model
    missing = set(model.state_dict()) - set(weights)
    if missing:
        raise CheckpointError(f"{source} does not match this model ({len(missing)} weights missing, e.g. "
                              f"{sorted(missing)[0]}); was it written by another --model or config?")
    model.load_state_dict({k: weights[k] for k in model.state_dict()})
    if trainer.ema is not None:
        ema_w = {k[4:]: v for k, v in weights.items() if k.startswith("ema.")}
        if ema_w:
            trainer.ema.model.load_state_dict(ema_w)
    model.load_extra_state({k: v for k, v in weights.items() if k.startswith("pool.")})
    trainer.fakes = {k[6:]: v.to(trainer.device) for k, v in weights.items() if k.startswith("fakes.")} or None
    trainer.swaps.load(state.get("swap"), weights, model, trainer.device)
    for name in ("opt_G", "opt_D", "sched_G", "sched_D", "scaler"):
        getattr(trainer, name).load_state_dict(state[name])
    set_rng_state(state["rng"])
    trainer.step = int(state["step"])
    trainer.data_position = int(state["data_position"])
    trainer.monitor.history = [HealthWarning(*w) for w in state.get("warnings", [])]
    trainer.best = json.loads(state.get("best") or "null")
    trainer.guard.load(json.loads(state.get("nan_guard") or "null"))
    trainer.train_seconds = float(state.get("train_seconds", 0.0))


class Checkpointer:
    """Where and when a trainer checkpoints: ``run_dir/step-<N>/`` folders (each carrying ``files``,
    the run's config copy and such), ``best_dir`` for the best evaluation, the newest ``keep_last``
    kept."""

    def __init__(self, run_dir: str | Path, *, every_steps: int = 500, every_minutes: float = 15.0,
                 keep_last: int = 3, files: dict[str, str] | None = None, best_dir: str | Path | None = None,
                 logs: tuple[Path, ...] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.every_steps, self.every_minutes, self.keep_last = every_steps, every_minutes, keep_last
        self.files = dict(files or {})
        self.best_dir = Path(best_dir) if best_dir is not None else None
        self.logs = logs  # jsonl files whose rows past the resumed step are dropped
        self.last_save = time.monotonic()

    def minutes_due(self) -> bool:
        return self.every_minutes > 0 and time.monotonic() - self.last_save >= 60 * self.every_minutes

    def steps_due(self, step: int) -> bool:
        return step % self.every_steps == 0

    def save(self, trainer) -> Path | None:
        """Checkpoint (every rank calls it; rank 0 writes). Returns the folder on rank 0."""
        data = payload(trainer)
        self.last_save = time.monotonic()
        # a failure to write (a full disk) stops every rank, not rank 0 alone
        path = distributed.on_main(lambda: save_checkpoint(self.run_dir, trainer.step, *data,
                                                           keep_last=self.keep_last, extra=self.files))
        log.debug("checkpoint %s", path)
        return path

    def save_best(self, trainer, best: dict[str, Any]) -> None:
        """The trainer's present state as ``best_dir`` (every rank calls it; rank 0 writes)."""
        from ..fileio import json_safe

        data = payload(trainer)
        if self.best_dir is not None:
            distributed.on_main(lambda: write_checkpoint_dir(
                self.best_dir, *data, extra={**self.files, "best.json": json.dumps(json_safe(best), indent=2) + "\n"}))

    def resume(self, trainer) -> Path | None:
        """Restore the newest checkpoint that verifies (warning about damaged newer ones); None when
        the run has none yet (it starts from step 0 with its saved config)."""
        loaded = distributed.everywhere(lambda: newest_loadable(self.run_dir))
        if loaded is None:
            self.after_restore(0)  # rows a run killed before its first checkpoint wrote
            return None
        weights, state, path = loaded
        restore(trainer, weights, state, str(path))
        self.after_restore(trainer.step)
        return path

    def after_restore(self, step: int) -> None:
        """Rank 0 tidies what a killed run left after ``step``: a half-renamed best folder and log rows."""
        from .logs import truncate_rows

        if distributed.world().main:
            if self.best_dir is not None:
                recover_dir(self.best_dir)
            truncate_rows(self.logs, step)
        self.last_save = time.monotonic()
        distributed.barrier()
