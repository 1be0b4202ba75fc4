"""Model families. Each is one small file over the shared engine."""
from __future__ import annotations

from typing import Any

from .base import GANModel
from .conditional import CGAN
from .cyclegan import CycleGAN
from .pix2pix import Pix2Pix
from .unconditional import DCGAN

FAMILIES: dict[str, type[GANModel]] = {"cyclegan": CycleGAN, "pix2pix": Pix2Pix, "dcgan": DCGAN, "cgan": CGAN}


def build_model(run_cfg: Any) -> GANModel:
    return FAMILIES[run_cfg.train.model](run_cfg.model, run_cfg.train)


__all__ = ["GANModel", "CycleGAN", "Pix2Pix", "DCGAN", "CGAN", "FAMILIES", "build_model"]
