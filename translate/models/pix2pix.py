"""pix2pix (Isola et al. 2017): paired translation with a U-Net generator and a conditional
PatchGAN that judges (input, output) pairs; the generator also minimises L1 to the target.

Two of pix2pixHD's additions (Wang et al. 2018) are options: ``num_D`` discriminators of the same
design judging the pairs at 1, 1/2, 1/4 ... scale (``D``, ``D2``, ``D4``: each sees the pair
average-pooled once more; their losses are summed), so the coarse ones see more of the image and the
full-scale one its texture; and ``lambda_feat``, feature matching: the generator also minimises the
L1 distance between each discriminator's intermediate activations on the real pair and on the fake
one, weighted as pix2pixHD does (``lambda_feat / num_D * 4 / (n_layers + 1)`` per layer).
``--recipe hd`` turns on both (``num_D`` 2, ``lambda_feat`` 10) with least squares, as pix2pixHD.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Pix2PixConfig, TrainConfig, check_network
from ..engine.replay import ReplayBuffer
from ..nn.discriminators import captured_features, downscale
from .base import (SMALL_DATA_RECIPE, Backward, Batch, Fakes, GANModel, Logs, Need, Translation, build_discriminator,
                   build_generator)
from .registry import register


@register
class Pix2Pix(GANModel):
    family = "pix2pix"
    config_class = Pix2PixConfig
    data = "paired"
    default_for = ("paired", "aligned", "synthetic")
    recipes = {"stable": {"label_smoothing": 0.1, "instance_noise": 0.05, "ema": 0.999},
               "hd": {"num_D": 2, "lambda_feat": 10.0, "gan_loss": "lsgan"},
               "small-data": SMALL_DATA_RECIPE}

    @classmethod
    def translations(cls, cfg) -> list[Translation]:
        d = cfg.model.direction
        return [Translation(d, "G", d[0], discriminator="D", conditional=True)]

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        check_network(cfg.train, cfg.model)
        m = cfg.model
        need(m.direction in ("AtoB", "BtoA"), f"direction must be AtoB or BtoA, not {m.direction!r}")
        need(1 <= m.num_D <= 4, f"num_D must be 1 to 4, not {m.num_D}")
        need(m.lambda_feat >= 0, "lambda_feat must be 0 (off) or more")
        smallest = cfg.train.size // 2 ** (m.num_D - 1)  # the coarsest discriminator's input
        if m.discriminator == "patch" and m.num_D > 1:
            need(smallest >= 3 * 2 ** m.n_layers, f"num_D={m.num_D} at --size {cfg.train.size}: the coarsest "
                                                  f"discriminator would see {smallest} px, fewer than its "
                                                  f"{3 * 2 ** m.n_layers} px patch needs; lower num_D or raise --size")

    def __init__(self, cfg: Pix2PixConfig, train: TrainConfig) -> None:
        super().__init__(cfg, train)
        self.src, self.tgt = ("A", "B") if cfg.direction == "AtoB" else ("B", "A")
        self.generators = nn.ModuleDict({"G": build_generator(cfg, train.size, cfg.in_channels, cfg.out_channels)})
        # D judges full-size pairs; with num_D > 1, D2 judges them at half size, D4 at a quarter ...
        self.discriminators = nn.ModuleDict({("D" if k == 0 else f"D{2 ** k}"):
                                             build_discriminator(cfg, cfg.in_channels + cfg.out_channels)
                                             for k in range(cfg.num_D)})
        self.pools = {"D": ReplayBuffer(cfg.pool_size, seed=train.seed)}

    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        src, tgt = batch[self.src], batch[self.tgt]
        if fakes is None:
            with torch.no_grad():
                fakes = {"src": src, "fake": self.generators["G"](src)}
        # the discriminator judges (input, output) pairs: a real pair, and a fake one (at each scale)
        fake_pair = self.pools["D"](torch.cat([fakes["src"], fakes["fake"]], dim=1))
        logs = {}
        for (name, d), real, fake in zip(self.discriminators.items(), self._scales(torch.cat([src, tgt], dim=1)),
                                         self._scales(fake_pair)):
            loss = self.d_score(d, real, fake)
            backward(loss)
            logs[f"loss_{name}"] = loss.detach()
        return logs

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        src, tgt = batch[self.src], batch[self.tgt]
        fake = self.generators["G"](src)
        gan = feat = fake.new_zeros((), dtype=torch.float32)
        real_pairs = self._scales(torch.cat([src, tgt], dim=1)) if self.cfg.lambda_feat else None
        devices = [fake.device] if fake.device.type == "cuda" else []
        for k, ((name, d), fake_pair) in enumerate(zip(self.discriminators.items(),
                                                       self._scales(torch.cat([src, fake], 1)))):
            if real_pairs is None:
                gan = gan + self.g_score(d, fake_pair)
                continue
            # D's activations on the real pair, then on the fake one as g_score runs it: the real pass
            # replays the random numbers the fake pass then draws, so both pairs get the same
            # augmentation and instance noise and their features compare like for like
            with torch.no_grad(), captured_features(d) as real_feats, torch.random.fork_rng(devices=devices):
                d(self.instance_noise(self.stabilisers.augment(name, real_pairs[k])))
            with captured_features(d) as fake_feats:
                gan = gan + self.g_score(d, fake_pair)
            feat = feat + sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_feats, real_feats))
        l1 = self.cfg.lambda_l1 * F.l1_loss(fake, tgt)
        logs = {"loss_G_GAN": gan.detach(), "loss_G_L1": l1.detach()}
        if real_pairs is not None:  # pix2pixHD's weights: the mean over discriminators, 4 / (layers + 1) per layer
            feat = self.cfg.lambda_feat / len(self.discriminators) * 4.0 / (self.cfg.n_layers + 1) * feat
            logs["loss_G_feat"] = feat.detach()
        backward(gan + l1 + feat)
        return logs, {"src": src.detach(), "fake": fake.detach()}

    def _scales(self, pair: torch.Tensor) -> list[torch.Tensor]:
        """``pair`` as each discriminator sees it: full size, then average-pooled to 1/2, 1/4 ..."""
        out = [pair]
        for _ in range(len(self.discriminators) - 1):
            out.append(downscale(out[-1]))
        return out

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        src, tgt = batch[self.src], batch[self.tgt]
        return {f"real_{self.src}": src, f"fake_{self.tgt}": self.generators["G"](src), f"real_{self.tgt}": tgt}
