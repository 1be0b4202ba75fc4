"""The registry of model families, and what is done with a family given a run's config:
its config from a dict, validation, building the model."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from torch import nn

from ..config import RunConfig, TrainConfig, build_dataclass, check_adversarial, check_train, need
from ..errors import ConfigError
from .base import GANModel

FAMILIES: dict[str, type[GANModel]] = {}
F = TypeVar("F", bound=type[GANModel])


def register(cls: F) -> F:
    """Make a family known by its ``family`` name (a class decorator)."""
    if not cls.family or not dataclasses.is_dataclass(getattr(cls, "config_class", None)):
        raise TypeError(f"{cls.__name__} needs a family name and a config_class dataclass to be registered")
    FAMILIES[cls.family] = cls
    return cls


def family(name: str) -> type[GANModel]:
    """The family registered as ``name``."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(FAMILIES)}") from None


def family_of(cfg: RunConfig) -> type[GANModel]:
    return family(cfg.train.model)


def default_family(layout: str) -> str:
    """The family trained on data of layout ``layout`` when --model is not given."""
    for name, cls in FAMILIES.items():
        if layout in cls.default_for:
            return name
    raise ConfigError(f"no model family trains {layout} data by default; choose one with --model "
                      f"({', '.join(FAMILIES)})")


def recipe_names() -> list[str]:
    """Every ``--recipe`` some family offers."""
    return sorted({name for cls in FAMILIES.values() for name in cls.recipes})


def config_from_dict(d: dict[str, Any], source: str = "config") -> RunConfig:
    """A RunConfig from its ``to_dict()`` form (a run's config.json), its model part by the family."""
    train = build_dataclass(TrainConfig, d.get("train", {}), source)
    if train.model not in FAMILIES:
        raise ConfigError(f"{source}: unknown model {train.model!r}; choose one of {', '.join(FAMILIES)}")
    return RunConfig(train=train, model=build_dataclass(FAMILIES[train.model].config_class, d.get("model", {}),
                                                        source))


def validate(cfg: RunConfig) -> None:
    """Check values a dataclass cannot (ranges and choices), the shared ones and the family's own.
    Raises ConfigError naming the option."""
    from ..metrics import METRIC

    t = cfg.train
    cls = family(t.model)
    check_train(t)
    check_adversarial(t, cfg.model.gan_loss)
    metric = METRIC[t.eval_metric]
    need(cls.offers(metric.needs), f"eval_metric {t.eval_metric} cannot score a {t.model} run (it needs "
                                   f"{metric.needs.replace('_', ' ')}); choose one of "
                                   f"{', '.join(m for m, x in METRIC.items() if x.selectable and cls.offers(x.needs))}")
    if cls.generative:
        need(t.holdout == 0, f"--holdout is for translation data; a {t.model} run holds out the last 10 % of "
                             f"each class of labelled data (or uses its test split) by itself")
    cls.check_config(cfg, need)


def build_model(cfg: RunConfig) -> GANModel:
    """The family's model for ``cfg``, its networks spectrally normalised when asked
    (``spectral_norm``, ``spectral_norm_g``). One rule for every family: a WGAN-GP discriminator
    cannot hold batch norm, whose statistics mix the samples the per-sample penalty keeps apart."""
    from ..nn.spectral import spectral_norm

    model = family_of(cfg)(cfg.model, cfg.train)
    if cfg.train.spectral_norm:
        spectral_norm(model.discriminators)
    if cfg.train.spectral_norm_g:
        spectral_norm(model.generators)
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.discriminators.modules())
    if model.adv.kind == "wgan-gp" and batch_norm:
        raise ConfigError(f"{cfg.model.gan_loss}'s gradient penalty is per sample, which batch norm in the "
                          f"discriminator breaks; add --set d_norm=none (or d_norm=instance)")
    return model


