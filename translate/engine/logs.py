"""What a training run logs: ``metrics.jsonl`` (and ``evals.jsonl``) rows, and optional sinks
beside them (TensorBoard event files, ``--log tensorboard``).

A sink takes ``scalars(step, values)`` and ``images(step, rows)`` and is closed at the end; the
trainer hands every metrics row, evaluation and sample grid to each.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch

from ..fileio import atomic_write_text, json_safe
from . import distributed


class Sink(Protocol):
    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def images(self, step: int, rows: dict[str, torch.Tensor]) -> None: ...

    def close(self) -> None: ...


def step_of(line: str) -> float:
    """The step of a jsonl row; a blank or half-written row (a killed append) counts as past any step."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def truncate_rows(paths: Iterable[Path], step: int) -> None:
    """Drop the rows a killed (or rolled-back) run wrote after ``step``."""
    for path in paths:
        if path.exists():
            rows = [line for line in path.read_text().splitlines() if step_of(line) <= step]
            atomic_write_text(path, "".join(r + "\n" for r in rows))


def append_row(path: Path | None, row: dict[str, Any]) -> None:
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(json_safe(row)) + "\n")


class MetricsLog:
    """Collects each step's logs and, every ``log_every`` steps, writes one row: losses averaged
    over the steps since the last row (and over the ranks: the global batch's), the largest
    gradient norms, the learning rate and the speed. Every rank takes part; rank 0 writes."""

    def __init__(self, path: Path | None = None, sinks: Iterable[Sink] = ()) -> None:
        self.path = path
        self.sinks = list(sinks)
        self.sums: dict[str, list[torch.Tensor]] = {}
        self.last_time, self.last_step = time.perf_counter(), 0

    def start(self, step: int) -> None:
        self.sums, self.last_time, self.last_step = {}, time.perf_counter(), step

    def add(self, logs: dict[str, torch.Tensor]) -> None:
        for k, v in logs.items():
            self.sums.setdefault(k, []).append(v)

    def row(self, step: int, lr: float, device: torch.device) -> dict[str, float]:
        keys = sorted(self.sums)
        stacked = [torch.stack([x.detach().float().to(device) for x in self.sums[k]]) for k in keys]
        values = torch.stack([v.max() if k.startswith("grad_norm/") else v.mean() for k, v in zip(keys, stacked)]) \
            if keys else torch.zeros(0, device=device)
        values = distributed.mean_over_ranks(values).cpu()
        now = time.perf_counter()
        row: dict[str, float] = {"step": step}
        row.update({k: float(v) for k, v in zip(keys, values)})
        row["lr"] = lr
        row["it_per_s"] = (step - self.last_step) / (now - self.last_time) if now > self.last_time else float("nan")
        if distributed.world().main:
            append_row(self.path, row)
            for sink in self.sinks:
                sink.scalars(step, {k: v for k, v in row.items() if k != "step"})
        self.start(step)
        return row

    def event(self, row: dict[str, Any]) -> None:
        """A row that records an event (a rollback) rather than averages; rank 0 writes it."""
        if distributed.world().main:
            append_row(self.path, row)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class TensorBoardSink:
    """TensorBoard event files in ``log_dir`` (``--log tensorboard``): every logged scalar (losses,
    gradient norms, learning rate, speed, evaluation scores) and the sample grids."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from ..errors import ConfigError

            raise ConfigError("--log tensorboard needs the tensorboard package: pip install "
                              "'translate[tensorboard]' (or drop --log tensorboard)") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def images(self, step: int, rows: dict[str, torch.Tensor]) -> None:
        for name, images in rows.items():  # NCHW in [-1, 1]
            x = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
            self.writer.add_images(f"samples/{name}", x[:, :3] if x.shape[1] >= 3 else x.expand(-1, 3, -1, -1), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
