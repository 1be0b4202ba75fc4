"""An exponential moving average of the generators' weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of the generators' weights (buffers are copied).

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` (as TensorFlow's moving average
    with ``num_updates``): without it, 0.999 would still hold 37 % of the random initial weights after
    1,000 steps, and a short run's EMA generator would be worse than its live one. The average then
    spans about the last ninth of the steps taken, up to the ``1 / (1 - decay)`` steps of ``decay``."""

    def __init__(self, generators: nn.ModuleDict, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(generators).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generators: nn.ModuleDict, step: int) -> None:
        """Move towards ``generators``' weights after training step ``step`` (counted from 0)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in generators.parameters()], 1.0 - decay)
        for e, b in zip(self.model.buffers(), generators.buffers()):
            e.copy_(b)
