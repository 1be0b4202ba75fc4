"""The discriminator-side stabilisers a model applies in ``d_score`` / ``g_score``
(``models/base.py``): differentiable (and adaptive) augmentation, lazy R1 and LeCam, kept per
discriminator by name. Spectral normalisation changes the networks themselves instead
(``nn/spectral.py``, applied by ``models.build_model``).

All state (the augmentation probability and its signal, the LeCam anchors) is tensors that the
model's ``extra_state`` puts into checkpoints, per training process, so a resumed run continues
exactly.
"""
from __future__ import annotations

from typing import Any

import torch

from . import distributed
from .augment import AdaptiveAugment, parse_policy
from .regularisers import LeCam, r1_penalty


class Stabilisers:
    def __init__(self, train: Any, gan_loss: str) -> None:
        self.policy = parse_policy(getattr(train, "d_augment", None))
        self.p = getattr(train, "d_augment_p", None)
        self.ada = dict(target=float(getattr(train, "ada_target", 0.0)), interval=int(getattr(train, "ada_interval", 4)),
                        speed_steps=int(getattr(train, "ada_steps", 500)),
                        threshold=0.5 if gan_loss == "lsgan" else 0.0)  # lsgan's targets are 1 and 0: 0.5 decides
        self.r1_gamma = float(getattr(train, "r1_gamma", 0.0))
        self.r1_every = int(getattr(train, "r1_every", 16))
        self.lecam_weight = float(getattr(train, "lecam_weight", 0.0))
        self.lecam_decay = float(getattr(train, "lecam_decay", 0.99))
        self.augments: dict[str, AdaptiveAugment] = {}
        self.lecams: dict[str, LeCam] = {}
        self.step = 0

    @property
    def needs_double_backward(self) -> bool:
        return self.r1_gamma > 0

    # --- per step ----------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Called before each step (by every training process): the adaptive probabilities move."""
        self.step = step
        reduce = distributed.mean_over_ranks if distributed.world().active else None
        for aug in self.augments.values():
            aug.adjust(step, reduce)

    def r1_due(self) -> bool:
        return self.r1_gamma > 0 and self.step % self.r1_every == 0

    # --- what a discriminator sees, and what its loss adds -------------------------------------
    def augmenter(self, name: str) -> AdaptiveAugment | None:
        if not self.policy:
            return None
        if name not in self.augments:
            self.augments[name] = AdaptiveAugment(self.policy, self.p, **self.ada)
        return self.augments[name]

    def augment(self, name: str, x: torch.Tensor) -> torch.Tensor:
        aug = self.augmenter(name)
        return x if aug is None else aug(x)

    def d_penalty(self, name: str, real_out: torch.Tensor, fake_out: torch.Tensor,
                  real_in: torch.Tensor | None) -> torch.Tensor | None:
        """What the stabilisers add to discriminator ``name``'s loss on one real and one fake batch:
        R1 (when ``real_in``, the real images ``real_out`` was computed from with gradients, is
        given) and LeCam; also feeds the adaptive augmentation its signal. None when nothing."""
        aug = self.augmenter(name)
        if aug is not None:
            aug.observe(real_out)
        terms = []
        if real_in is not None:
            terms.append((self.r1_gamma / 2 * self.r1_every) * r1_penalty(real_out, real_in))
        if self.lecam_weight > 0:
            if name not in self.lecams:
                self.lecams[name] = LeCam(self.lecam_decay)
            terms.append(self.lecam_weight * self.lecams[name](real_out, fake_out))
        return sum(terms) if terms else None

    def logs(self) -> dict[str, torch.Tensor]:
        """The augmentation probability of each discriminator (``aug_p/<name>``), when augmenting."""
        return {f"aug_p/{name}": aug.p for name, aug in self.augments.items()}

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, aug in self.augments.items():
            out.update({f"aug.{name}.{k}": v for k, v in aug.state_dict().items()})
        for name, lecam in self.lecams.items():
            out.update({f"lecam.{name}.{k}": v for k, v in lecam.state_dict().items()})
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        for key in tensors:
            kind, _, rest = key.partition(".")
            name = rest.rpartition(".")[0]
            if kind == "aug" and self.policy:
                self.augmenter(name)
            elif kind == "lecam" and self.lecam_weight > 0 and name not in self.lecams:
                self.lecams[name] = LeCam(self.lecam_decay)
        for prefix, parts in (("aug", self.augments), ("lecam", self.lecams)):
            for name, part in parts.items():
                head = f"{prefix}.{name}."
                part.load_state_dict({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}, device)
