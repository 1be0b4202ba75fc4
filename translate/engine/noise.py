"""Instance noise: Gaussian noise on the discriminator's inputs, annealed to zero.

Real and fake distributions in image space barely overlap early in training, so a perfect
discriminator exists and its gradients carry no information. Blurring both with noise makes them
overlap (Sønderby et al. 2016; Arjovsky & Bottou 2017); the noise is annealed linearly so that the
final discriminator sees clean images.
"""
from __future__ import annotations

import torch


class InstanceNoise:
    def __init__(self, sigma: float = 0.0, anneal_steps: int = 1) -> None:
        if sigma < 0:
            raise ValueError("instance noise sigma must be >= 0")
        self.sigma0 = sigma
        self.anneal_steps = max(1, anneal_steps)
        self.sigma = sigma

    def set_step(self, step: int) -> None:
        self.sigma = self.sigma0 * max(0.0, 1.0 - step / self.anneal_steps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return x
        return x + self.sigma * torch.randn_like(x)
