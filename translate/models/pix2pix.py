"""pix2pix (Isola et al. 2017): paired translation with a U-Net generator and a conditional
PatchGAN that judges (input, output) pairs; the generator also minimises L1 to the target."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Pix2PixConfig, TrainConfig, check_network
from ..engine.replay import ReplayBuffer
from .base import Backward, Batch, Fakes, GANModel, Logs, Need, Translation, build_discriminator, build_generator
from .registry import register


@register
class Pix2Pix(GANModel):
    family = "pix2pix"
    config_class = Pix2PixConfig
    data = "paired"
    default_for = ("paired", "aligned", "synthetic")
    recipes = {"stable": {"label_smoothing": 0.1, "instance_noise": 0.05, "ema": 0.999}}

    @classmethod
    def translations(cls, cfg) -> list[Translation]:
        d = cfg.model.direction
        return [Translation(d, "G", d[0], discriminator="D", conditional=True)]

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        check_network(cfg.train, cfg.model)
        need(cfg.model.direction in ("AtoB", "BtoA"), f"direction must be AtoB or BtoA, not {cfg.model.direction!r}")

    def __init__(self, cfg: Pix2PixConfig, train: TrainConfig) -> None:
        super().__init__(cfg, train)
        self.src, self.tgt = ("A", "B") if cfg.direction == "AtoB" else ("B", "A")
        self.generators = nn.ModuleDict({"G": build_generator(cfg, train.size, cfg.in_channels, cfg.out_channels)})
        self.discriminators = nn.ModuleDict({"D": build_discriminator(cfg, cfg.in_channels + cfg.out_channels)})
        self.pools = {"D": ReplayBuffer(cfg.pool_size, seed=train.seed)}

    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        src, tgt = batch[self.src], batch[self.tgt]
        if fakes is None:
            with torch.no_grad():
                fakes = {"src": src, "fake": self.generators["G"](src)}
        # the discriminator judges (input, output) pairs: a real pair, and a fake one
        fake_pair = self.pools["D"](torch.cat([fakes["src"], fakes["fake"]], dim=1))
        loss = self.d_score(self.discriminators["D"], torch.cat([src, tgt], dim=1), fake_pair)
        backward(loss)
        return {"loss_D": loss.detach()}

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        src, tgt = batch[self.src], batch[self.tgt]
        fake = self.generators["G"](src)
        gan = self.g_score(self.discriminators["D"], torch.cat([src, fake], dim=1))
        l1 = self.cfg.lambda_l1 * F.l1_loss(fake, tgt)
        backward(gan + l1)
        return {"loss_G_GAN": gan.detach(), "loss_G_L1": l1.detach()}, {"src": src.detach(), "fake": fake.detach()}

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        src, tgt = batch[self.src], batch[self.tgt]
        return {f"real_{self.src}": src, f"fake_{self.tgt}": self.generators["G"](src), f"real_{self.tgt}": tgt}
