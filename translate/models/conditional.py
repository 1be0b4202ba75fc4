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
    # AC-GAN's classifier for the right class, the per-class minibatch spread against its pull
    # towards one sample per class (measured against aux_classifier=1.0 alone: docs/results.md)
    recipes = {"stable": {**DCGAN.recipes["stable"], "aux_classifier": 2.0, "class_minibatch_std": True}}

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        super().check_config(cfg, need)
        m = cfg.model
        need(m.aux_classifier >= 0, "aux_classifier must be 0 (off) or a positive loss weight")
        need(m.aux_classifier_end is None or m.aux_classifier_end >= 0, "aux_classifier_end must be >= 0 (or none)")
        need(not m.twin_classifier or m.aux_classifier > 0,
             "twin_classifier is TAC-GAN's second classifier beside AC-GAN's: give aux_classifier a weight too")
        need(m.n_classes >= 0, "n_classes must be >= 0 (0: from the data)")
        need(m.conditioning in CONDITIONINGS, f"conditioning must be one of {', '.join(CONDITIONINGS)}")
        need(m.conditioning != "cbn" or m.norm == "batch",
             "conditioning cbn is a batch norm: it needs norm batch (or use --set conditioning=concat)")
        need(m.embed_dim >= 1, "embed_dim must be at least 1")

    def set_schedule(self, step: int, total_steps: int, noise_steps: int | None) -> None:
        """Also anneals the generator's auxiliary-classifier weight to ``aux_classifier_end``."""
        super().set_schedule(step, total_steps, noise_steps)
        start, end = self.cfg.aux_classifier, self.cfg.aux_classifier_end
        if end is not None:
            self.aux_weight_g = start + (end - start) * min(1.0, step / max(1, total_steps))

    def fake_labels(self, batch: Batch) -> torch.Tensor:
        return batch["label"]
