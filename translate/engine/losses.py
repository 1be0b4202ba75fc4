"""Adversarial losses and the discriminator-side label tricks.

Every loss works on raw discriminator outputs (logits or critic scores, any shape).

| kind            | discriminator minimises                          | generator minimises        |
|-----------------|--------------------------------------------------|----------------------------|
| ``minimax``     | BCE(D(x), 1) + BCE(D(G(z)), 0)                   | log(1 - sigmoid(D(G(z))))  |
| ``nonsaturating`` | same as minimax                                | BCE(D(G(z)), 1)            |
| ``lsgan``       | (D(x) - 1)^2 + D(G(z))^2                         | (D(G(z)) - 1)^2            |
| ``wgan``        | D(G(z)) - D(x), weights clipped to [-c, c]       | -D(G(z))                   |
| ``wgan-gp``     | D(G(z)) - D(x) + lambda * (|grad D(x^)| - 1)^2   | -D(G(z))                   |
| ``hinge``       | relu(1 - D(x)) + relu(1 + D(G(z)))               | -D(G(z))                   |

The saturating ``minimax`` generator loss is the game as first written (Goodfellow et al. 2014);
its gradient vanishes while the discriminator wins, which is why ``nonsaturating`` exists and is
what the pix2pix reference trains with (its "vanilla" GAN).

Label tricks (target-based kinds only: minimax, nonsaturating, lsgan), discriminator side only:
- ``label_smoothing`` s: one-sided, real targets become 1 - s (Salimans et al. 2016).
- ``noisy_labels``: real targets drawn from U[0.7, 1.2], fake from U[0, 0.3].
- ``label_flip`` p: each sample's real/fake targets are swapped with probability p.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

GAN_LOSSES = ("minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge")
TARGET_LOSSES = ("minimax", "nonsaturating", "lsgan")


class AdversarialLoss(nn.Module):
    def __init__(self, kind: str = "lsgan", *, label_smoothing: float = 0.0, noisy_labels: bool = False,
                 label_flip: float = 0.0, clip_value: float = 0.01, gp_weight: float = 10.0) -> None:
        super().__init__()
        if kind not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}")
        uses_labels = label_smoothing > 0 or noisy_labels or label_flip > 0
        if uses_labels and kind not in TARGET_LOSSES:
            raise ValueError(f"label smoothing, noisy labels and label flips need a target-based loss "
                             f"({', '.join(TARGET_LOSSES)}), not {kind!r}")
        if not 0.0 <= label_smoothing < 1.0 or not 0.0 <= label_flip <= 1.0:
            raise ValueError("label_smoothing must be in [0, 1) and label_flip in [0, 1]")
        self.kind = kind
        self.label_smoothing = label_smoothing
        self.noisy_labels = noisy_labels
        self.label_flip = label_flip
        self.clip_value = clip_value if kind == "wgan" else None
        self.gp_weight = gp_weight if kind == "wgan-gp" else 0.0

    # --- targets -----------------------------------------------------------------------------
    def _targets(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        if self.noisy_labels:
            lo, hi = (0.7, 1.2) if real else (0.0, 0.3)
            return torch.empty_like(pred).uniform_(lo, hi)
        value = (1.0 - self.label_smoothing) if real else 0.0
        return torch.full_like(pred, value)

    def _d_targets(self, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_real, t_fake = self._targets(real_pred, True), self._targets(fake_pred, False)
        if self.label_flip > 0:
            n = real_pred.shape[0]
            flip = (torch.rand(n, device=real_pred.device) < self.label_flip).view(-1, *([1] * (real_pred.dim() - 1)))
            t_real, t_fake = torch.where(flip, t_fake, t_real), torch.where(flip, t_real, t_fake)
        return t_real, t_fake

    def _criterion(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "lsgan":
            return F.mse_loss(pred.float(), target.float())
        return F.binary_cross_entropy_with_logits(pred.float(), target.float())

    # --- losses ------------------------------------------------------------------------------
    def d_loss(self, real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
        """Discriminator loss on its outputs for real and (detached) fake inputs."""
        if self.kind in TARGET_LOSSES:
            t_real, t_fake = self._d_targets(real_pred, fake_pred)
            return self._criterion(real_pred, t_real) + self._criterion(fake_pred, t_fake)
        real_pred, fake_pred = real_pred.float(), fake_pred.float()
        if self.kind == "hinge":
            return F.relu(1.0 - real_pred).mean() + F.relu(1.0 + fake_pred).mean()
        return fake_pred.mean() - real_pred.mean()  # wgan, wgan-gp (penalty added separately)

    def g_loss(self, fake_pred: torch.Tensor) -> torch.Tensor:
        """Generator loss on the discriminator's output for fakes (labels never smoothed here)."""
        fake_pred = fake_pred.float()
        if self.kind == "minimax":
            return -F.softplus(fake_pred).mean()  # = mean(log(1 - sigmoid(x))), minimised
        if self.kind == "nonsaturating":
            return F.softplus(-fake_pred).mean()  # = BCE(x, 1)
        if self.kind == "lsgan":
            return F.mse_loss(fake_pred, torch.ones_like(fake_pred))
        return -fake_pred.mean()  # wgan, wgan-gp, hinge

    def penalty(self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        """The WGAN-GP gradient penalty, or None for other kinds."""
        if not self.gp_weight:
            return None
        return self.gp_weight * gradient_penalty(critic, real, fake)

    def clip_(self, critic: nn.Module) -> None:
        """WGAN weight clipping, applied after each discriminator step; a no-op for other kinds."""
        if self.clip_value is not None:
            with torch.no_grad():
                for p in critic.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x)||_2 - 1)^2] at random interpolates of real and fake (Gulrajani et al. 2017)."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    return ((grad.flatten(1).float().norm(2, dim=1) - 1.0) ** 2).mean()
