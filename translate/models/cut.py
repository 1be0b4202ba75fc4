"""CUT and FastCUT (Park, Efros, Zhang, Zhu 2020): unpaired translation with one generator, one
discriminator and a contrastive loss between input and output patches instead of a cycle.

G translates the source domain into the target domain; D judges target-domain images. Besides
fooling D, G's output must keep the content of its input, measured by PatchNCE
(``nn/patchnce.py``): G's own encoder, read at ``nce_layers`` (feature taps of the ResNet
generator, no second copy of it), embeds patches of the input and of the output, and each output
patch must pick out the input patch at its position among the other patches of the image. Small
projection heads (an MLP per tapped layer) learn with G; they are checkpointed, never exported.

The two presets are the reference's ``CUT_mode``s:
- ``cut``: ``lambda_nce`` 1 and the identity term ``nce_idt`` (G applied to a target-domain image
  must keep its patches too, which stops G changing what needs no change), 200 + 200 epochs;
- ``fastcut``: ``lambda_nce`` 10, no identity term (about half the generator work per step), and
  flip-equivariance instead (half the steps translate the mirrored input, and its features are
  mirrored back before they are compared), 150 + 50 epochs.

Both anti-alias the generator's resampling (``antialias``), use least squares, no replay pool,
Xavier initialisation with gain 0.02, as the reference. ``direction`` BtoA swaps the domains
(e.g. labels -> photo on facades, whose A is the photo).

Work per step: the input's features for PatchNCE are those of G's own forward pass on it (the
same computation the reference repeats in a separate encoder pass), so a CUT step runs G twice
forward (input and, for ``nce_idt``, the target image) and its encoder twice (their outputs);
the keys get no gradient and are projected without building a graph; each chain is
back-propagated as soon as it is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import NetworkConfig, TrainConfig, check_network
from ..engine.replay import ReplayBuffer
from ..nn.layers import init_weights
from ..nn.patchnce import PatchNCE
from .base import Backward, Batch, Fakes, GANModel, Logs, Need, Translation, build_discriminator, build_generator
from .registry import register

TAPS_HELP = "input, down1, down2 and block1 ... block<n> (the residual blocks)"


@dataclass
class CUTConfig(NetworkConfig):
    """CUT (the reference's ``--CUT_mode CUT``): ResNet-9 with anti-aliased resampling, 70x70 PatchGAN,
    LSGAN, PatchNCE on the input, both downsampling layers and residual blocks 1 and 5, identity NCE."""

    init: str = "xavier"
    antialias: bool = True
    pool_size: int = 0
    direction: str = "AtoB"  # AtoB | BtoA: which domain is translated into the other
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True  # PatchNCE between a target image and G's output for it too
    nce_layers: str = "input,down1,down2,block1,block5"  # the reference's 0,4,8,12,16 in our generator's names
    num_patches: int = 256  # positions sampled per layer
    nce_dim: int = 256  # projection heads' output size
    nce_temperature: float = 0.07
    nce_batch_negatives: bool = False  # negatives from every image of the batch, not only the same image
    flip_equivariance: bool = False


@dataclass
class FastCUTConfig(CUTConfig):
    """FastCUT (``--CUT_mode FastCUT``): no identity NCE, lambda_nce 10, flip-equivariance."""

    lambda_nce: float = 10.0
    nce_idt: bool = False
    flip_equivariance: bool = True


def taps_of(cfg: CUTConfig) -> list[str]:
    return [t.strip() for t in cfg.nce_layers.split(",") if t.strip()]


@register
class CUT(GANModel):
    family = "cut"
    config_class = CUTConfig
    data = "unpaired"
    layouts = ("unpaired", "synthetic")  # trainA/ + trainB/ folders, and the embedded demo scenes
    train_defaults = {"epochs": 400}  # 200 at the full learning rate, 200 decaying (the reference's)
    recipes = {"stable": {"label_smoothing": 0.1, "instance_noise": 0.05, "ema": 0.999}}

    @classmethod
    def translations(cls, cfg) -> list[Translation]:
        d = cfg.model.direction
        return [Translation(d, "G", d[0])]

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        m = cfg.model
        check_network(cfg.train, m)
        need(m.direction in ("AtoB", "BtoA"), f"direction must be AtoB or BtoA, not {m.direction!r}")
        need(m.generator.startswith("resnet_"), f"{cfg.train.model} reads its generator's encoder through the "
                                                f"ResNet generators' feature taps; choose generator=resnet_9blocks "
                                                f"or resnet_6blocks, not {m.generator}")
        blocks = int(m.generator.removeprefix("resnet_").removesuffix("blocks")) if m.generator.startswith(
            "resnet_") else 0
        valid = ["input", "down1", "down2", *(f"block{i}" for i in range(1, blocks + 1))]
        taps = taps_of(m)
        bad = [t for t in taps if t not in valid]
        need(bool(taps) and not bad, f"nce_layers {m.nce_layers!r}: {', '.join(bad) or 'none given'}; choose from "
                                     f"{', '.join(valid)}, comma separated")
        need(len(set(taps)) == len(taps), f"nce_layers {m.nce_layers!r} names a layer twice")
        need(m.lambda_gan >= 0 and m.lambda_nce >= 0, "lambda_gan and lambda_nce must be 0 or more")
        need(m.num_patches >= 1 and m.nce_dim >= 1, "num_patches and nce_dim must be at least 1")
        need(m.nce_temperature > 0, "nce_temperature must be positive")

    def __init__(self, cfg: CUTConfig, train: TrainConfig) -> None:
        super().__init__(cfg, train)
        self.src, self.tgt = ("A", "B") if cfg.direction == "AtoB" else ("B", "A")
        g = build_generator(cfg, train.size, cfg.in_channels, cfg.out_channels)
        self.generators = nn.ModuleDict({"G": g})
        self.discriminators = nn.ModuleDict({"D": build_discriminator(cfg, cfg.out_channels)})
        self.taps = taps_of(cfg)
        # the heads exist from the start (their inputs' channels are the generator's), so they are
        # initialised from the run's seed, checkpointed and restored like any other weight
        self.nce = init_weights(PatchNCE([g.tap_channels[t] for t in self.taps], num_patches=cfg.num_patches,
                                         dim=cfg.nce_dim, temperature=cfg.nce_temperature,
                                         batch_negatives=cfg.nce_batch_negatives), cfg.init, cfg.init_gain)
        self.pools = {"D": ReplayBuffer(cfg.pool_size, seed=train.seed)}

    def generator_side(self) -> dict[str, nn.Module]:
        return {**self.generators, "F": self.nce}  # F: the projection heads, the reference's netF

    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        if fakes is None:
            with torch.no_grad():
                fakes = {"fake": self.generators["G"](batch[self.src])}
        loss = self.d_score(self.discriminators["D"], batch[self.tgt], self.pools["D"](fakes["fake"]))
        backward(loss)
        return {"loss_D": loss.detach()}

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        cfg = self.cfg
        # FastCUT: half the steps translate the mirrored images (drawn from torch's RNG, checkpointed)
        flip = cfg.flip_equivariance and bool(torch.rand(()) < 0.5)
        identity = cfg.nce_idt and cfg.lambda_nce > 0
        weight = 0.5 if identity else 1.0  # the reference averages the two NCE terms
        fake, nce = self._translate(batch[self.src], flip)
        gan = cfg.lambda_gan * self.g_score(self.discriminators["D"], fake)
        backward(gan + weight * nce)
        logs = {"loss_G_GAN": gan.detach(), "loss_NCE": nce.detach()}
        if identity:  # G should leave a target-domain image's patches where they are
            _, nce_idt = self._translate(batch[self.tgt], flip)
            backward(weight * nce_idt)
            logs["loss_NCE_idt"] = nce_idt.detach()
        return logs, {"fake": fake.detach()}

    def _translate(self, x: torch.Tensor, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """G's output for ``x`` (mirrored first when ``flip``) and its weighted PatchNCE loss against ``x``."""
        g = self.generators["G"]
        if not self.cfg.lambda_nce:
            return g(x.flip(3) if flip else x), x.new_zeros((), dtype=torch.float32)
        if flip:
            out = g(x.flip(3))
            with torch.no_grad():
                keys = g.encode(x, self.taps)
        else:  # the input's features are those of this very pass: no second encoder pass
            out, keys = g.forward_taps(x, self.taps)
        queries = g.encode(out, self.taps)
        if flip:  # mirrored back, so each output patch faces the input patch it came from
            queries = [q.flip(3) for q in queries]
        return out, self.cfg.lambda_nce * self.nce(queries, keys)

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        g = self.generators["G"]
        src, tgt = batch[self.src], batch[self.tgt]
        rows = {f"real_{self.src}": src, f"fake_{self.tgt}": g(src), f"real_{self.tgt}": tgt}
        if self.cfg.nce_idt:
            rows[f"idt_{self.tgt}"] = g(tgt)
        return rows


@register
class FastCUT(CUT):
    family = "fastcut"
    config_class = FastCUTConfig
    train_defaults = {"epochs": 200, "decay_from": 0.75}  # 150 at the full learning rate, 50 decaying
