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

from .base import Batch
from .unconditional import DCGAN


class CGAN(DCGAN):
    family = "cgan"
    conditional = True

    def fake_labels(self, batch: Batch) -> torch.Tensor:
        return batch["label"]
