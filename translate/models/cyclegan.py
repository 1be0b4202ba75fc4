"""CycleGAN (Zhu et al. 2017): unpaired translation with two generators and two discriminators.

G_AB: A -> B and G_BA: B -> A; D_A judges domain-A images, D_B domain-B images. The generators
are trained against the discriminators plus a cycle loss (A -> B -> A returns A) and an identity
loss (G_AB leaves a B image unchanged), which preserves colour composition.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CycleGANConfig, TrainConfig, check_network
from ..engine.replay import ReplayBuffer
from .base import (SMALL_DATA_RECIPE, Backward, Batch, Fakes, GANModel, Logs, Need, Translation, build_discriminator,
                   build_generator)
from .registry import register


@register
class CycleGAN(GANModel):
    family = "cyclegan"
    config_class = CycleGANConfig
    data = "unpaired"
    default_for = ("unpaired",)
    recipes = {"stable": {"label_smoothing": 0.1, "instance_noise": 0.05, "ema": 0.999},
               "small-data": SMALL_DATA_RECIPE}

    @classmethod
    def translations(cls, cfg) -> list[Translation]:
        return [Translation("AtoB", "G_AB", "A", discriminator="D_B"),
                Translation("BtoA", "G_BA", "B", discriminator="D_A")]

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        check_network(cfg.train, cfg.model)

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

    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        real_A, real_B = batch["A"], batch["B"]
        if fakes is None:
            with torch.no_grad():
                fakes = {"fake_A": self.generators["G_BA"](real_B), "fake_B": self.generators["G_AB"](real_A)}
        loss_A = self.d_score(self.discriminators["D_A"], real_A, self.pools["A"](fakes["fake_A"]))
        backward(loss_A)
        loss_B = self.d_score(self.discriminators["D_B"], real_B, self.pools["B"](fakes["fake_B"]))
        backward(loss_B)
        return {"loss_D_A": loss_A.detach(), "loss_D_B": loss_B.detach()}

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        cfg = self.cfg
        G_AB, G_BA = self.generators["G_AB"], self.generators["G_BA"]
        real_A, real_B = batch["A"], batch["B"]
        # Each chain is back-propagated as soon as it is built (see base.py): two generator graphs
        # alive at a time instead of six. One call per generator and input: batching A and B into
        # one call is slower on a CPU.
        fake_B = G_AB(real_A)
        gan_AB = self.g_score(self.discriminators["D_B"], fake_B)
        cycle_A = cfg.lambda_cycle * F.l1_loss(G_BA(fake_B), real_A)
        backward(gan_AB + cycle_A)
        fake_A = G_BA(real_B)
        gan_BA = self.g_score(self.discriminators["D_A"], fake_A)
        cycle_B = cfg.lambda_cycle * F.l1_loss(G_AB(fake_A), real_B)
        backward(gan_BA + cycle_B)
        logs = {"loss_G_AB": gan_AB.detach(), "loss_G_BA": gan_BA.detach(),
                "loss_cycle": (cycle_A + cycle_B).detach()}
        if cfg.lambda_identity > 0:  # G_AB should leave a B image as it is, and G_BA an A image
            weight = cfg.lambda_cycle * cfg.lambda_identity
            idt_B = weight * F.l1_loss(G_AB(real_B), real_B)
            backward(idt_B)
            idt_A = weight * F.l1_loss(G_BA(real_A), real_A)
            backward(idt_A)
            logs["loss_idt"] = (idt_A + idt_B).detach()
        return logs, {"fake_A": fake_A.detach(), "fake_B": fake_B.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        real_A, real_B = batch["A"], batch["B"]
        fake_B = self.generators["G_AB"](real_A)
        fake_A = self.generators["G_BA"](real_B)
        return {
            "real_A": real_A, "fake_B": fake_B, "rec_A": self.generators["G_BA"](fake_B),
            "real_B": real_B, "fake_A": fake_A, "rec_B": self.generators["G_AB"](fake_A),
        }
