"""Model families: each is one small file over the shared engine, registered by name.

A family is a :class:`GANModel` subclass that declares what it is (see ``base.py``) and is
registered with :func:`register`; everything else (the CLI's ``--model`` choices, configs, data,
export, eval, sampling, reports) reads the registry and the family's declared hooks, never a
family's name. A family defined in a user's (or a test's) own module and registered there works
through the whole CLI and API.
"""
from __future__ import annotations

from .base import GANModel, Translation
from .registry import (FAMILIES, build_model, config_from_dict, default_family, family, family_of, recipe_names,
                       register, validate)

# importing a family's module registers it (in this order: the --model choices' order)
from .cyclegan import CycleGAN  # noqa: E402, I001
from .pix2pix import Pix2Pix  # noqa: E402
from .cut import CUT, FastCUT  # noqa: E402
from .unconditional import DCGAN  # noqa: E402
from .conditional import CGAN  # noqa: E402
from .distill import Distill  # noqa: E402

__all__ = ["GANModel", "Translation", "CycleGAN", "Pix2Pix", "CUT", "FastCUT", "DCGAN", "CGAN", "Distill", "FAMILIES",
           "register", "family", "family_of", "default_family", "recipe_names", "config_from_dict", "validate",
           "build_model"]
