"""``--eval-every`` as the trainer sees it: a scoring callable, the metric it keeps the best
checkpoint by, and where the rows go. The train command builds it from the scorers and the list of
metrics; the engine knows neither."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .logs import Sink, append_row

log = logging.getLogger("translate.train")


@dataclass
class Evaluation:
    every: int  # steps between evaluations
    metric: str  # what "best" means
    better: Callable[[float, float], bool]  # better(a, b): is a better than b?
    score: Callable[[nn.ModuleDict], tuple[float, dict[str, Any]]]  # generators -> (metric value, results)
    path: Path | None = None  # evals.jsonl
    sinks: list[Sink] = field(default_factory=list)

    def due(self, step: int, total_steps: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == total_steps)

    def judge(self, step: int, value: float, best: dict[str, Any] | None) -> dict[str, Any] | None:
        """The new best ``{"metric", "value", "step"}`` if ``value`` beats ``best`` (one kept by
        another metric, after ``--eval-metric`` changed on resume, does not count), else None."""
        if best is not None and best["metric"] != self.metric:
            best = None
        if value != value or (best is not None and not self.better(value, best["value"])):  # NaN never wins
            return None
        return {"metric": self.metric, "value": value, "step": step}

    def record(self, row: dict[str, Any]) -> None:
        append_row(self.path, row)
        for sink in self.sinks:
            sink.scalars(row["step"], {f"eval/{d}/{k}": v for d, r in row["results"].items() for k, v in r.items()
                                       if isinstance(v, (int, float))})
        log.info("eval at step %d: %s %.4g%s", row["step"], row["metric"], row["value"],
                 " (best so far)" if row["best"] else "")
