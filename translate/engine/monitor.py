"""Health monitor: spots the common ways GAN training fails and says so in plain words."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HealthWarning:
    step: int
    code: str  # "d_collapse" | "grad_explosion" | "mode_collapse" | "nan"
    short: str  # for the progress bar
    message: str  # for the log

    def __str__(self) -> str:
        return f"step {self.step}: {self.message}"


def sample_diversity(images: torch.Tensor) -> float:
    """Mean pairwise L1 distance between the images of a batch (0 when all are identical)."""
    x = images.detach().float().flatten(1)
    if x.shape[0] < 2:
        return float("nan")
    d = torch.cdist(x, x, p=1) / x.shape[1]
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)))


class HealthMonitor:
    """Watches the logged losses, gradient norms and sample diversity.

    - D collapse: the discriminator loss stays below ``d_loss_floor`` for ``patience`` updates in a
      row: it separates real from fake perfectly and the generator learns nothing.
    - Exploding gradients: a network's gradient norm passes ``grad_limit`` (100) *and* is at least
      ``grad_jump`` (10x) its median so far. The rise matters as much as the level: with the
      reference's N(0, 0.02) init under instance norm, healthy CycleGAN generators run at gradient
      norms of 100-300 for their whole run, so a fixed limit alone would warn on every run.
    - Mode collapse: the generated samples of a batch differ far less from one another than the
      real images do (ratio below ``diversity_floor``) after they once differed well (at least twice
      the floor). An untrained generator's outputs are all near-uniform grey, which is no collapse.
    - Non-finite losses.

    ``d_loss_key`` names the discriminator losses to watch (None for losses that have no floor, such
    as the Wasserstein critic's). Each kind of warning is given once until the condition clears.
    """

    def __init__(self, *, d_loss_keys: tuple[str, ...] = ("loss_D",), d_loss_floor: float = 0.01,
                 patience: int = 5, grad_limit: float = 100.0, grad_jump: float = 10.0,
                 diversity_floor: float = 0.1) -> None:
        self.d_loss_keys = d_loss_keys
        self.d_loss_floor = d_loss_floor
        self.grad_limit = grad_limit
        self.grad_jump = grad_jump
        self.grad_history: dict[str, deque] = {}  # recent norms per network
        self.was_diverse: set[str] = set()  # generators whose samples have once differed well
        self.diversity_floor = diversity_floor
        self.recent: dict[str, deque] = {k: deque(maxlen=patience) for k in d_loss_keys}
        self.active: dict[str, HealthWarning] = {}  # conditions in force now
        self.history: list[HealthWarning] = []

    def _raise(self, key: str, warning: HealthWarning) -> list[HealthWarning]:
        if key in self.active:
            return []
        self.active[key] = warning
        self.history.append(warning)
        return [warning]

    def check_losses(self, step: int, logs: dict[str, float]) -> list[HealthWarning]:
        new: list[HealthWarning] = []
        for name, value in logs.items():
            if name.startswith("loss") and not math.isfinite(value):
                new += self._raise(f"nan:{name}", HealthWarning(
                    step, "nan", f"{name} not finite",
                    f"{name} became {value}: training has diverged. Lower the learning rate (--lr) or "
                    f"resume from an earlier checkpoint."))
        for key in self.d_loss_keys:
            if key not in logs:
                continue
            window = self.recent[key]
            window.append(logs[key])
            if len(window) == window.maxlen and max(window) < self.d_loss_floor:
                new += self._raise(f"d:{key}", HealthWarning(
                    step, "d_collapse", f"{key}→0",
                    f"the discriminator loss {key} has stayed below {self.d_loss_floor} for {len(window)} "
                    f"steps: the discriminator wins every time, so the generator gets no useful signal. "
                    f"Try label smoothing, instance noise, a lower discriminator learning rate or a replay pool."))
            elif max(window) >= self.d_loss_floor:
                self.active.pop(f"d:{key}", None)
        for name, value in logs.items():
            if not name.startswith("grad_norm/"):
                continue
            net = name.split("/", 1)[1]
            history = self.grad_history.setdefault(net, deque(maxlen=200))
            typical = sorted(history)[len(history) // 2] if len(history) >= 3 else None
            history.append(value)
            exploding = not math.isfinite(value) or (
                value > self.grad_limit and typical is not None and value > self.grad_jump * typical)
            if exploding:
                new += self._raise(f"g:{net}", HealthWarning(
                    step, "grad_explosion", f"|∇{net}|={value:.0f}",
                    f"the gradient norm of {net} jumped to {value:.1f}"
                    + (f" from a typical {typical:.1f}" if typical else "")
                    + f" (limit {self.grad_limit:g}): training is unstable. Lower the learning rate, "
                    f"or use a gradient penalty (--gan-loss wgan-gp)."))
            else:
                self.active.pop(f"g:{net}", None)
        return new

    def check_samples(self, step: int, fake: torch.Tensor, real: torch.Tensor, name: str = "G") -> list[HealthWarning]:
        """Compare the diversity of a batch of generated images with that of real images."""
        d_fake, d_real = sample_diversity(fake), sample_diversity(real)
        if not d_real > 0:  # single image, or identical real images: nothing to compare
            return []
        ratio = d_fake / d_real
        if ratio >= 2 * self.diversity_floor:
            self.was_diverse.add(name)
        if ratio < self.diversity_floor and name in self.was_diverse:
            return self._raise(f"m:{name}", HealthWarning(
                step, "mode_collapse", f"{name} collapse",
                f"the samples of {name} have collapsed: they differ {ratio:.0%} as much as real images do "
                f"(mode collapse). Try a replay pool, minibatch statistics, or resume from an earlier "
                f"checkpoint with a lower learning rate."))
        self.active.pop(f"m:{name}", None)
        return []
