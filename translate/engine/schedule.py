"""How long a run is and how its learning rate moves."""
from __future__ import annotations

import math
from typing import Any, Callable


def linear_decay(total_steps: int, decay_from: float) -> Callable[[int], float]:
    """Learning-rate factor: 1 until ``decay_from * total_steps``, then linear to 0 at the end."""
    start = int(total_steps * decay_from)
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        return 1.0 if step < start else max(0.0, 1.0 - (step - start) / span)

    return factor


def lr_factor(scaling: str, world_size: int) -> float:
    """``--lr-scaling``: what the learning rates are multiplied by with ``world_size`` ranks, each
    with its own ``batch_size``: ``none`` 1, ``linear`` the world size (Goyal et al. 2017), ``sqrt``
    its square root (the rule for Adam-like optimisers)."""
    return {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[scaling]


def total_steps_for(t: Any, samples_per_epoch: int, default_epochs: int = 200, world_size: int = 1) -> int:
    """``--steps`` if given, else epochs (default 200, the reference's 100 + 100) of the data, with
    ``world_size`` ranks each drawing ``batch_size`` samples per discriminator step."""
    if t.steps:
        return t.steps
    per_step = t.batch_size * t.n_critic * world_size
    return (t.epochs or default_epochs) * max(1, math.ceil(samples_per_epoch / per_step))
