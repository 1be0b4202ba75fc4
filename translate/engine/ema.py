"""An exponential moving average of the generators' weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of the generators' weights (buffers are copied)."""

    def __init__(self, generators: nn.ModuleDict, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(generators).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generators: nn.ModuleDict) -> None:
        ema_p = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in generators.parameters()], 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), generators.buffers()):
            e.copy_(b)
