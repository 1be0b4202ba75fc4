"""Class-conditional GAN: the DCGAN networks with the label given to both. The generator is
conditioned by a learned label embedding concatenated to z (or, ``conditioning: cbn``, by a
class-conditional batch norm in every layer), the discriminator by projection (Miyato & Koyama 2018): its score
adds ``<embed(y), phi(x)>`` to an unconditional one, which trains faster and more stably than
feeding the label in as an input channel.

Labels come from the data: sub-folder names (``DIR/<class>/*.png``) or a labelled array file.
Fakes are drawn for the classes of the real batch, so real and fake batches have the same class
mix (and the gradient penalty's interpolates a label that fits both ends).
"""
from __future__ import annotations

import torch

from ..config import CGANConfig
from ..nn.dcgan import CONDITIONINGS
from .base import Batch, Need
from .registry import register
from .unconditional import DCGAN


@register
class CGAN(DCGAN):
    family = "cgan"
    config_class = CGANConfig
    conditional = True
    default_for = ()
    recipes = {"stable": {**DCGAN.recipes["stable"], "aux_classifier": 1.0}}

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        super().check_config(cfg, need)
        m = cfg.model
        need(m.aux_classifier >= 0, "aux_classifier must be 0 (off) or a positive loss weight")
        need(m.n_classes >= 0, "n_classes must be >= 0 (0: from the data)")
        need(m.conditioning in CONDITIONINGS, f"conditioning must be one of {', '.join(CONDITIONINGS)}")
        need(m.conditioning != "cbn" or m.norm == "batch",
             "conditioning cbn is a batch norm: it needs norm batch (or use --set conditioning=concat)")
        need(m.embed_dim >= 1, "embed_dim must be at least 1")

    def fake_labels(self, batch: Batch) -> torch.Tensor:
        return batch["label"]
