"""Data-parallel training over several processes, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m translate train ...`` starts N copies of the command, each with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment; :func:`setup` joins them into one
process group (NCCL for CUDA tensors, Gloo for CPU ones). Each rank then trains the same networks
on its own slice of every global batch, and the gradients are averaged before each optimiser step,
so all ranks hold the same weights at all times.

The gradients are averaged by hand (one flattened all-reduce per network group, as StyleGAN2-ADA
does) rather than by wrapping the networks in ``DistributedDataParallel``: a GAN's discriminator
runs forward on the real and the fake batch before one backward, runs frozen inside the generator's
step, and may be followed by a gradient penalty's double backward, and DDP's reducer, which expects
one forward per backward of a module whose parameters all take part, handles none of that. The
result is the same averaged gradient DDP computes.

Everything here is a no-op in a single process, so the trainer calls it unconditionally.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from ..errors import DeviceError

log = logging.getLogger("translate.train")
T = TypeVar("T")

TIMEOUT = timedelta(minutes=30)  # a rank waits this long for the others (rank 0 may be downloading data)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0  # 0 .. size - 1, over all machines
    size: int = 1
    local_rank: int = 0  # 0 .. processes on this machine - 1: the GPU it drives
    local_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, writes samples and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        nodes = max(1, self.size // max(1, self.local_size))
        return f"{self.size} processes ({self.local_size} per machine, {nodes} machine{'s' * (nodes > 1)})"


_world = World()


def world() -> World:
    """The current process's :class:`World` (a single process until :func:`setup` joined a group)."""
    return _world


def from_env(environ: dict[str, str] | None = None) -> World:
    """The world ``torchrun`` (or SLURM's ``srun`` with the same variables set) describes; one
    process when the variables are absent."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise DeviceError("RANK, LOCAL_RANK and WORLD_SIZE must be whole numbers; launch with torchrun "
                          "(torchrun --nproc_per_node=N -m translate train ...)") from None
    if not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise DeviceError(f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={size}; launch with torchrun")
    return World(rank, size, local_rank, local_size)


def setup(device: str | None = "auto") -> World:
    """Join the process group of a ``torchrun`` launch (a no-op for a single process). CUDA tensors
    travel over NCCL and CPU ones over Gloo; with ``device`` cpu (or no GPU) Gloo carries all."""
    global _world
    w = from_env()
    if not w.active or _world.active:
        return _world
    import torch.distributed as dist

    if not dist.is_available():
        raise DeviceError("this PyTorch build has no torch.distributed; install the official wheels to train "
                          "on several processes")
    cuda = torch.cuda.is_available() and (device or "auto") != "cpu"
    if cuda and w.local_rank < torch.cuda.device_count():  # (too few GPUs is an error once CUDA is chosen)
        torch.cuda.set_device(w.local_rank)
    backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
    # torch.distributed.nn binds ``group=group.WORLD`` as default arguments when first imported (by
    # torch._dynamo, say, mid-training): imported after the group exists, those defaults keep it
    # alive past destroy_process_group, its worker threads run into interpreter shutdown, and one
    # still freeing the last collective's tensors there aborts the process ("terminate called
    # without an active exception"). Imported first, they hold None.
    importlib.import_module("torch.distributed.nn")

    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    _world = w
    return w


def teardown(finished: bool = False) -> None:
    """Leave the process group. ``finished``: every rank got to the end of the same work, so they
    meet once more first; the collectives' worker threads are done with the last one's tensors
    before this process moves on to exit (a failing rank does not wait for the others)."""
    global _world
    if _world.active:
        if finished:
            barrier()
        import torch.distributed as dist

        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        _world = World()


def rank_seed(seed: int, rank: int) -> int:
    """Each rank's own seed for the random draws of training (dropout, noise, latents, replay):
    the run's seed on rank 0, so a one-process run is unchanged, and independent streams elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] % 2**63)


def device_for(device: torch.device) -> torch.device:
    """``cuda`` means this rank's own GPU (``cuda:LOCAL_RANK``) when several processes train."""
    if _world.active and device.type == "cuda":
        if _world.local_rank >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK {_world.local_rank} but only {torch.cuda.device_count()} GPU(s) are "
                              f"visible; use --nproc_per_node={torch.cuda.device_count()} or fewer (or --device cpu)")
        return torch.device("cuda", _world.local_rank)
    return device


# --- collectives (no-ops in one process) ----------------------------------------------------------
def _dist():
    import torch.distributed as dist

    return dist


def barrier() -> None:
    if _world.active:
        _dist().barrier()


def average_gradients(modules: Iterable[nn.Module]) -> None:
    """Average the gradients of ``modules`` over all ranks, in one flattened all-reduce per dtype.
    Every rank runs the same code path, so the same parameters have gradients everywhere."""
    if not _world.active:
        return
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault((g.dtype, g.device), []).append(g)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        _dist().all_reduce(flat)
        flat.div_(_world.size)
        offset = 0
        for g in group:
            n = g.numel()
            g.copy_(flat[offset: offset + n].view_as(g))
            offset += n


def broadcast_module(module: nn.Module) -> None:
    """Make every rank's parameters and buffers rank 0's."""
    if not _world.active:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            _dist().broadcast(t.data, src=0)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean of a float tensor over all ranks (for the logged losses)."""
    if not _world.active:
        return values
    values = values.clone()
    _dist().all_reduce(values)
    return values / _world.size


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a Ctrl-C on one machine stops them all at
    the same step). One small all-reduce of a CPU tensor (Gloo): the GPU is not waited for."""
    return any_ranks((flag,))[0]


def any_ranks(flags: tuple[bool, ...]) -> tuple[bool, ...]:
    """:func:`any_rank` of several flags in one all-reduce (a stop request and a timed checkpoint
    that rank 0's clock says is due, agreed after every step)."""
    if not _world.active:
        return tuple(bool(f) for f in flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags])
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return tuple(bool(x > 0) for x in t.tolist())


def gather_to_main(obj: T) -> list[T] | None:
    """Every rank's ``obj`` (plain values and CPU tensors) on rank 0, in rank order; None elsewhere.
    Only our own processes' objects travel; nothing is read from disk this way."""
    if not _world.active:
        return [obj]
    out: list[Any] | None = [None] * _world.size if _world.main else None
    _dist().gather_object(obj, out, dst=0)
    return out


def from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if not _world.active:
        return obj
    box = [obj if _world.main else None]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def _run_phase(fn: Callable[[], T], run: bool) -> T | None:
    """Run ``fn`` where ``run`` holds, then share the outcome: if it failed on any rank, it raises
    on every rank (the failing rank's own error there, a pointer to it elsewhere), so no rank is
    left waiting for one that stopped."""
    result, error = None, None
    if run:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others heard of it
            error = exc
    if not _world.active:
        if error is not None:
            raise error
        return result
    outcomes: list[str | None] = [None] * _world.size
    _dist().all_gather_object(outcomes, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, msg) for r, msg in enumerate(outcomes) if msg is not None]
    if failed:
        rank, msg = failed[0]
        raise DeviceError(f"rank {rank} failed ({msg}); see its message above")
    return result


def everywhere(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank; a failure on any stops every rank (say, a checkpoint one machine
    cannot see), instead of leaving the others waiting in the next collective."""
    return _run_phase(fn, True)


def on_main(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 alone (None elsewhere); a failure there stops every rank."""
    return _run_phase(fn, _world.main)


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 first, then on the other ranks (which then find, say, the data set
    rank 0 downloaded in place): first each other machine's local rank 0, then the rest. A failure
    anywhere stops every rank."""
    if not _world.active:
        return fn()
    result = _run_phase(fn, _world.main)
    second = _run_phase(fn, not _world.main and _world.local_rank == 0)
    third = _run_phase(fn, _world.local_rank != 0)
    return result if _world.main else second if _world.local_rank == 0 else third


# --- batch norm -----------------------------------------------------------------------------------
def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def sync_batchnorm(modules: list[nn.Module], device: torch.device) -> bool:
    """Convert the batch norms inside ``modules`` to ``SyncBatchNorm`` (statistics over the global
    batch) when several ranks train on CUDA. PyTorch's SyncBatchNorm runs on CUDA only: on the CPU
    each rank normalises by its own slice, as DDP without SyncBatchNorm does. Returns whether
    anything was converted."""
    if not _world.active or not any(has_batchnorm(m) for m in modules):
        return False
    if device.type != "cuda":
        if _world.main:
            log.warning("batch norm normalises each rank's slice of the batch on its own: SyncBatchNorm needs "
                        "CUDA (on the CPU, use --set norm=instance for statistics independent of the split)")
        return False
    for module in modules:
        for name, child in module.named_children():
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return True


@contextlib.contextmanager
def only_main_logs() -> Iterator[None]:
    """Quiet the other ranks: warnings and errors only, each prefixed by its rank."""
    if not _world.active or _world.main:
        yield
        return
    logger = logging.getLogger("translate")
    level = logger.level
    logger.setLevel(logging.WARNING)
    rank = _world.rank

    def tag(record: logging.LogRecord) -> bool:  # a handler filter may be a plain callable
        if not str(record.msg).startswith("[rank "):  # once, however many handlers see the record
            record.msg = f"[rank {rank}] {record.msg}"
        return True

    for h in logger.handlers:
        h.addFilter(tag)
    try:
        yield
    finally:
        logger.setLevel(level)
        for h in logger.handlers:
            h.removeFilter(tag)
