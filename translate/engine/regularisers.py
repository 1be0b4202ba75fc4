"""Discriminator regularisers for small data: R1 (Mescheder et al. 2018) and LeCam (Tseng et al. 2021).

- **R1** penalises the discriminator's gradient on real images, ``gamma / 2 * E ||grad_x D(x)||^2``:
  at the data, D should be flat, so it cannot build the cliffs that make training oscillate (the
  penalty that made GANs converge in Mescheder et al.'s analysis; StyleGAN2's default). Computed
  lazily, every ``every``-th step only, and multiplied by ``every`` so its average weight stays
  ``gamma`` (StyleGAN2's lazy regularisation): most steps then skip the double backward.
- **LeCam** keeps D's outputs on real images close to the running average of its outputs on fakes
  and the other way round, ``E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2]`` with ``a_R``, ``a_F``
  exponential moving averages (decay 0.99) of D's mean outputs on real and fake images (the
  authors' code). D can then no longer push real and fake scores arbitrarily far apart, which is
  what a discriminator memorising a small data set does. The anchors are tensors, checkpointed.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def r1_penalty(real_out: torch.Tensor, real_in: torch.Tensor) -> torch.Tensor:
    """``E ||grad_x sum D(x)||^2`` over the batch: ``real_out`` was computed from ``real_in``, which
    requires grad (a PatchGAN's map of outputs is summed per image, as StyleGAN2 sums its logits)."""
    (grad,) = torch.autograd.grad(real_out.float().sum(), real_in, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


class LeCam:
    """The LeCam regulariser of one discriminator, with its EMA anchors."""

    def __init__(self, decay: float = 0.99) -> None:
        self.decay = decay
        self.real = torch.zeros(())  # EMA of D's mean output on real images
        self.fake = torch.zeros(())
        self.seen = torch.zeros(())  # 0 until the first update: the anchors then start at that batch's means

    def __call__(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        """The penalty against the anchors as they stand, then the anchors move to this batch."""
        real_out, fake_out = real_out.float(), fake_out.float()
        dev = real_out.device
        self.real, self.fake, self.seen = self.real.to(dev), self.fake.to(dev), self.seen.to(dev)
        with torch.no_grad():  # the first batch anchors itself
            first = self.seen == 0
            a_real = torch.where(first, real_out.mean(), self.real)
            a_fake = torch.where(first, fake_out.mean(), self.fake)
        loss = F.relu(real_out - a_fake).square().mean() + F.relu(a_real - fake_out).square().mean()
        with torch.no_grad():
            decay = torch.where(first, torch.zeros_like(self.real), torch.full_like(self.real, self.decay))
            self.real = decay * self.real + (1 - decay) * real_out.mean()
            self.fake = decay * self.fake + (1 - decay) * fake_out.mean()
            self.seen = self.seen + 1
        return loss

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"real": self.real.detach().cpu().clone(), "fake": self.fake.detach().cpu().clone(),
                "seen": self.seen.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        if not state:
            return
        self.real, self.fake, self.seen = (state[k].to(device).clone() for k in ("real", "fake", "seen"))
