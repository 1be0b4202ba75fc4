"""CycleGAN (Zhu et al. 2017): unpaired translation with two generators and two discriminators.

G_AB: A -> B and G_BA: B -> A; D_A judges domain-A images, D_B domain-B images. The generators
are trained against the discriminators plus a cycle loss (A -> B -> A returns A) and an identity
loss (G_AB leaves a B image unchanged), which preserves colour composition.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CycleGANConfig, TrainConfig
from ..engine.replay import ReplayBuffer
from .base import Batch, GANModel, build_discriminator, build_generator


class CycleGAN(GANModel):
    family = "cyclegan"

    def __init__(self, cfg: CycleGANConfig, train: TrainConfig) -> None:
        super().__init__(cfg, train)
        c_in, c_out = cfg.in_channels, cfg.out_channels
        self.generators = nn.ModuleDict({
            "G_AB": build_generator(cfg, train.size, c_in, c_out),
            "G_BA": build_generator(cfg, train.size, c_out, c_in),
        })
        self.discriminators = nn.ModuleDict({
            "D_A": build_discriminator(cfg, c_in),
            "D_B": build_discriminator(cfg, c_out),
        })
        self.pools = {"A": ReplayBuffer(cfg.pool_size, seed=train.seed),
                      "B": ReplayBuffer(cfg.pool_size, seed=train.seed + 1)}
        # Instance norm treats each image alone, so the two calls per generator can share a batch.
        self._batch_calls = cfg.norm != "batch" and c_in == c_out

    def _translate_and_identity(self, real_A: torch.Tensor, real_B: torch.Tensor, identity: bool):
        G_AB, G_BA = self.generators["G_AB"], self.generators["G_BA"]
        if identity and self._batch_calls:
            n = real_A.shape[0]
            fake_B, idt_B = G_AB(torch.cat([real_A, real_B])).split([n, real_B.shape[0]])
            fake_A, idt_A = G_BA(torch.cat([real_B, real_A])).split([real_B.shape[0], n])
            return fake_A, fake_B, idt_A, idt_B
        fake_B, fake_A = G_AB(real_A), G_BA(real_B)
        if not identity:
            return fake_A, fake_B, None, None
        return fake_A, fake_B, G_BA(real_A), G_AB(real_B)

    def discriminator_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        real_A, real_B = batch["A"], batch["B"]
        with torch.no_grad():
            fake_B = self.generators["G_AB"](real_A)
            fake_A = self.generators["G_BA"](real_B)
        loss_A = self.d_score(self.discriminators["D_A"], real_A, self.pools["A"](fake_A))
        loss_B = self.d_score(self.discriminators["D_B"], real_B, self.pools["B"](fake_B))
        return loss_A + loss_B, {"loss_D_A": loss_A.detach(), "loss_D_B": loss_B.detach()}

    def generator_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        real_A, real_B = batch["A"], batch["B"]
        use_idt = cfg.lambda_identity > 0
        fake_A, fake_B, idt_A, idt_B = self._translate_and_identity(real_A, real_B, use_idt)
        rec_A = self.generators["G_BA"](fake_B)
        rec_B = self.generators["G_AB"](fake_A)
        gan_AB = self.g_score(self.discriminators["D_B"], fake_B)
        gan_BA = self.g_score(self.discriminators["D_A"], fake_A)
        cycle = cfg.lambda_cycle * (F.l1_loss(rec_A, real_A) + F.l1_loss(rec_B, real_B))
        loss = gan_AB + gan_BA + cycle
        logs = {"loss_G_AB": gan_AB.detach(), "loss_G_BA": gan_BA.detach(), "loss_cycle": cycle.detach()}
        if use_idt:
            idt = cfg.lambda_cycle * cfg.lambda_identity * (F.l1_loss(idt_B, real_B) + F.l1_loss(idt_A, real_A))
            loss = loss + idt
            logs["loss_idt"] = idt.detach()
        return loss, logs

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        real_A, real_B = batch["A"], batch["B"]
        fake_B = self.generators["G_AB"](real_A)
        fake_A = self.generators["G_BA"](real_B)
        return {
            "real_A": real_A, "fake_B": fake_B, "rec_A": self.generators["G_BA"](fake_B),
            "real_B": real_B, "fake_A": fake_A, "rec_B": self.generators["G_AB"](fake_A),
        }
