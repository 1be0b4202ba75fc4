"""Distillation (GAN Compression, Li et al. 2020): a small student learns to translate as a trained
teacher does, as a model family of its own over the ordinary engine.

A distillation's config holds its teacher: the checkpoint folder, its step, the hash of its
config and a copy of that config. From the copy alone the family knows everything a run of it
needs to be exported, scored, served or resumed: the students' architecture (the teacher
family's, built with ``width`` and ``blocks`` changed), the data (the teacher's, held-out files
kept out), and the directions it translates (the teacher's ``translations``, those distilled).

- ``generators``: the students, one per distilled translation, under the teacher's names. Each is
  a :class:`Student`: the small network (what export traces) and the 1x1 convolutions that map its
  activations onto the teacher's during training.
- ``discriminators``: the ones that judge the distilled translations, started from the teacher's
  (of a pix2pix teacher with pix2pixHD's ``num_D`` > 1: the full-scale ``D`` alone).
- the teacher's generators (EMA weights when kept) are loaded by :meth:`Distill.setup_training`,
  which ``translate train`` calls on the model it trains and nothing else does: they are frozen,
  in eval mode, outside ``generators`` (export never sees them) and outside the checkpoint (they
  are rebuilt from the teacher's own checkpoint on resume, after checking its config and step).

The student's loss, per translation::

    lambda_gan     x the adversarial loss against the discriminator
  + lambda_recon   x L1(student(x), teacher(x))
  + lambda_gt      x L1(student(x), ground truth)                    (paired data only)
  + lambda_feature x sum over layers of MSE(adapter(student features), teacher features)

The discriminator learns as the teacher's did (its loss, pairs when it judged pairs, the replay
pool), with the students' outputs as the fakes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..config import RunConfig, TrainConfig
from ..engine.replay import ReplayBuffer
from ..errors import CheckpointError, ConfigError
from ..nn import init_weights
from ..nn.generators import BLOCKS, tap_features
from .base import Backward, Batch, Fakes, GANModel, Logs, Need, Translation
from .registry import config_from_dict, family_of, register


@dataclass
class DistillConfig:
    """A distillation: its teacher, the students' shape and the weights of the losses."""

    teacher: str = ""  # the teacher's checkpoint folder (absolute); rebuilt from it to train, never saved with us
    teacher_step: int = 0  # the step of that checkpoint, checked when the teacher is loaded
    teacher_hash: str = ""  # run.config_hash of the teacher's config: a record, beside the config itself
    teacher_config: dict = field(default_factory=dict)  # the teacher's config (train + model)
    students: str = ""  # the teacher's generators distilled, comma-separated ("G_AB,G_BA"); "": all it translates with
    width: float = 0.25  # the students' channel counts: the teacher's times this
    blocks: str = "standard"  # standard | mobile (depthwise-separable convolutions in the blocks)
    lambda_recon: float = 100.0  # L1 to the teacher's output
    lambda_gt: float = 100.0  # L1 to the ground truth, where the data is paired
    lambda_feature: float = 1.0  # MSE between teacher and (adapted) student activations
    feature_layers: int = 4  # activations compared per generator (its feature_layers)
    lambda_gan: float = 1.0  # the adversarial loss
    gan_loss: str = "lsgan"  # the teacher's: its discriminator was trained with it
    pool_size: int = 0  # replay pool of past fakes per discriminator; the teacher's


def teacher_config(cfg: DistillConfig) -> RunConfig:
    """The teacher's RunConfig, from the copy the distillation carries."""
    if not isinstance(cfg.teacher_config, dict) or not cfg.teacher_config:
        raise ConfigError("a distillation needs its teacher's config; start one with 'translate distill RUN'")
    return config_from_dict(cfg.teacher_config, source=f"the config of the teacher {cfg.teacher}")


def student_names(cfg: DistillConfig) -> list[str]:
    return [n.strip() for n in cfg.students.split(",") if n.strip()]


class Student(nn.Module):
    """A distilled generator: ``net``, the small network that is exported and deployed, and
    ``adapters``, 1x1 convolutions mapping its activations at ``layers`` onto the teacher's at
    ``teacher_layers`` (the same places; their names differ where the blocks do) while it learns.
    ``forward`` is ``net``'s alone, so an export leaves the adapters out."""

    def __init__(self, net: nn.Module, layers: list[str], adapters: list[nn.Module],
                 teacher_layers: list[str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.layers = list(layers)
        self.teacher_layers = list(teacher_layers if teacher_layers is not None else layers)
        self.adapters = nn.ModuleList(adapters)

    @property
    def size_multiple(self) -> int:
        return int(getattr(self.net, "size_multiple", 4))

    @property
    def min_side(self) -> int:
        return int(getattr(self.net, "min_side", 0))

    def deployed_parameters(self) -> int:
        """Parameters of the network that is exported (the adapters are for training only)."""
        return sum(p.numel() for p in self.net.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _channels_at(net: nn.Module, layers: list[str]) -> list[int]:
    """The channel counts of ``net``'s outputs at ``layers``, read from its modules (``net`` may sit
    on the meta device): what the last convolution or norm inside the tapped module (or the module
    itself) makes, else the last one before it (a ReLU's input)."""
    def channels(m: nn.Module) -> int | None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return m.out_channels
        if isinstance(m, nn.GroupNorm):
            return m.num_channels
        return m.num_features if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) else None

    order = [(name, channels(m)) for name, m in net.named_modules()]
    out = []
    for layer in layers:
        at = next((i for i, (name, _) in enumerate(order) if name == layer), None)
        inside = [c for name, c in order if (name == layer or name.startswith(layer + ".")) and c]
        before = [c for _, c in order[:at] if c] if at is not None else []
        if not (inside or before):
            raise ConfigError(f"cannot tell how many channels {type(net).__name__}.{layer} makes; add "
                              f"--set lambda_feature=0")
        out.append((inside or before)[-1])
    return out


@register
class Distill(GANModel):
    family = "distill"
    config_class = DistillConfig

    @classmethod
    def translations(cls, cfg) -> list[Translation]:
        tcfg = teacher_config(cfg.model)
        offered = family_of(tcfg).translations(tcfg)
        names = student_names(cfg.model)
        return [tr for tr in offered if not names or tr.generator in names]

    @classmethod
    def data_of(cls, cfg) -> str:
        tcfg = teacher_config(cfg.model)
        return family_of(tcfg).data_of(tcfg)

    @classmethod
    def distilled_from(cls, cfg) -> str | None:
        return cfg.model.teacher

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        m = cfg.model
        tcfg = teacher_config(m)
        tfam = family_of(tcfg)
        where = m.teacher or "the teacher"
        if issubclass(tfam, Distill):
            need(False, f"{where} is itself a distilled student; distil its teacher ({tcfg.model.teacher}) with "
                        f"the --width you want")
        offered = [] if tfam.generative else tfam.translations(tcfg)
        need(bool(offered), f"{where} is a {tfam.family} run, which generates images from noise: it has no "
                            f"translator to distil; give a translation run (pix2pix, CycleGAN)")
        need(0 < m.width <= 1, f"--width must be above 0 and at most 1 (a fraction of the teacher's channels), "
                               f"not {m.width:g}")
        ngf = getattr(tcfg.model, "ngf", None)
        if ngf is not None:
            need(ngf * m.width >= 1, f"--width {m.width:g} leaves the students no channels (the teacher's ngf is "
                                     f"{ngf}); use at least {1 / ngf:.3g}")
        need(m.blocks in BLOCKS, f"--blocks must be one of {', '.join(BLOCKS)}, not {m.blocks!r}")
        need(all(hasattr(tcfg.model, k) for k in ("width", "blocks")),
             f"the {tfam.family} family's config has no width and blocks options, so its generators cannot be "
             f"built smaller; translate distill needs them")
        have = [tr.generator for tr in offered]
        unknown = [n for n in student_names(m) if n not in have]
        need(not unknown, f"{where} has the generators {', '.join(have)}, not {', '.join(unknown)}; choose with "
                          f"--generator")
        for name in ("lambda_recon", "lambda_gt", "lambda_feature", "lambda_gan"):
            need(getattr(m, name) >= 0, f"{name} must be 0 (off) or a positive loss weight")
        need(m.feature_layers >= 1, "feature_layers must be at least 1 (or set lambda_feature=0)")
        need(m.pool_size >= 0, "pool_size must be >= 0")
        student = RunConfig(train=cfg.train, model=dataclasses.replace(tcfg.model, width=m.width, blocks=m.blocks))
        tfam.check_config(student, need)

    def __init__(self, cfg: DistillConfig, train: TrainConfig) -> None:
        super().__init__(cfg, train)
        tcfg = teacher_config(cfg)
        tfam = family_of(tcfg)
        self.directions = self.translations(RunConfig(train=train, model=cfg))
        self.paired = tfam.data_of(tcfg) == "paired"
        # the students and discriminators: the teacher family's own, built with the students' shape
        inner = tfam(dataclasses.replace(tcfg.model, width=cfg.width, blocks=cfg.blocks), train)
        with torch.device("meta"):  # the teacher's layers, to read the channels the adapters map onto
            teacher_shape = tfam(tcfg.model, train)
        init = getattr(tcfg.model, "init", "normal"), getattr(tcfg.model, "init_gain", 0.02)
        students, self.judge = {}, {}
        for tr in self.directions:
            net = inner.generators[tr.generator]
            layers: list[str] = []
            t_layers: list[str] = []
            adapters: list[nn.Module] = []
            if cfg.lambda_feature > 0:
                t_net = teacher_shape.generators[tr.generator]
                if not (hasattr(net, "feature_layers") and hasattr(t_net, "feature_layers")):
                    raise ConfigError(f"the {tfam.family} generator {tr.generator} names no layers for feature "
                                      f"distillation; add --set lambda_feature=0")
                layers, t_layers = net.feature_layers(cfg.feature_layers), t_net.feature_layers(cfg.feature_layers)
                if len(layers) != len(t_layers):
                    raise ConfigError(f"the {tr.generator} student and teacher name {len(layers)} and {len(t_layers)} "
                                      f"feature layers; add --set lambda_feature=0")
                s_ch, t_ch = _channels_at(net, layers), _channels_at(t_net, t_layers)
                adapters = [init_weights(nn.Conv2d(s, t, 1), *init) for s, t in zip(s_ch, t_ch)]
            students[tr.generator] = Student(net, layers, adapters, t_layers)
            judge = tr.discriminator or (next(iter(inner.discriminators)) if len(inner.discriminators) == 1 else "")
            if judge not in inner.discriminators:
                raise ConfigError(f"the {tfam.family} family does not say which discriminator judges {tr.direction} "
                                  f"(its translations() name none, and it has {len(inner.discriminators)})")
            self.judge[tr.generator] = judge
        self.generators = nn.ModuleDict(students)
        self.discriminators = nn.ModuleDict({d: inner.discriminators[d] for d in dict.fromkeys(self.judge.values())})
        self.pools = {d: ReplayBuffer(cfg.pool_size, seed=train.seed + i) for i, d in enumerate(self.discriminators)}
        self.teachers: dict[str, nn.Module] = {}  # by setup_training; a plain dict: no submodule, no checkpoint

    # --- the teacher -----------------------------------------------------------------------------
    def setup_training(self, open_checkpoint: Callable[[str], Any]) -> None:
        """Load the frozen teachers (EMA weights when kept) from the teacher's checkpoint, after
        checking it is the one this distillation started from, and start the discriminators from
        the teacher's (a resumed run then restores its own)."""
        cfg = self.cfg
        path = Path(cfg.teacher)
        recorded = f"step {cfg.teacher_step}, config hash {cfg.teacher_hash}"
        if not path.is_dir():
            raise CheckpointError(f"the teacher of this distillation, {path}, is gone ({recorded}); put it back to "
                                  f"train or resume the distillation")
        ckpt = open_checkpoint(path)
        if ckpt.config.to_dict() != teacher_config(cfg).to_dict():
            raise CheckpointError(f"{path} is not the teacher this distillation learnt from: its config.json changed "
                                  f"({recorded} recorded); restore it, or distil it anew")
        if ckpt.step != cfg.teacher_step:
            raise CheckpointError(f"{path} now holds step {ckpt.step}, and this distillation learnt from step "
                                  f"{cfg.teacher_step}; restore that checkpoint, or distil this one anew")
        with torch.random.fork_rng():  # loading draws nothing from the run's random streams
            loaded = ckpt.generators(list(self.generators))
        device = next(self.parameters()).device
        self.teachers = {name: g.net.requires_grad_(False).eval().to(device) for name, g in loaded.items()}
        weights, _ = ckpt.load()
        for name, net in self.discriminators.items():
            prefix = f"discriminators.{name}."
            net.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})

    def _apply(self, fn, recurse=True):
        """``.to(device)``, ``.to(memory_format=...)`` and the like move the teachers too."""
        super()._apply(fn, recurse)
        for net in getattr(self, "teachers", {}).values():
            net._apply(fn, recurse)
        return self

    def _teacher(self, name: str) -> nn.Module:
        if name not in self.teachers:
            raise RuntimeError("the teacher is loaded by setup_training(), which translate train calls before training")
        return self.teachers[name]

    # --- the contract --------------------------------------------------------------------------
    def _judged(self, tr: Translation, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """What the discriminator of ``tr`` sees of an output: the (input, output) pair or the output."""
        return torch.cat([src, out], dim=1) if tr.conditional else out

    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        if fakes is None:
            with torch.no_grad():
                fakes = {}
                for tr in self.directions:
                    src = batch[tr.source]
                    fakes[f"src_{tr.generator}"], fakes[f"fake_{tr.generator}"] = src, self.generators[tr.generator](src)
        logs = {}
        for tr in self.directions:
            d = self.judge[tr.generator]
            src, fake = fakes[f"src_{tr.generator}"], fakes[f"fake_{tr.generator}"]
            real = self._judged(tr, batch[tr.source], batch[tr.target])
            loss = self.d_score(self.discriminators[d], real, self.pools[d](self._judged(tr, src, fake)))
            backward(loss)
            logs[f"loss_{d}"] = loss.detach()
        return logs

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        cfg = self.cfg
        logs, fakes = {}, {}
        for tr in self.directions:
            g = tr.generator
            student, teacher = self.generators[g], self._teacher(g)
            src = batch[tr.source]
            with torch.no_grad(), tap_features(teacher, student.teacher_layers) as t_features:
                target = teacher(src)
            with tap_features(student.net, student.layers) as s_features:
                out = student(src)
            parts = {"gan": cfg.lambda_gan * self.g_score(self.discriminators[self.judge[g]], self._judged(tr, src, out)),
                     "recon": cfg.lambda_recon * F.l1_loss(out, target)}
            if self.paired and cfg.lambda_gt > 0:
                parts["gt"] = cfg.lambda_gt * F.l1_loss(out, batch[tr.target])
            if student.layers:
                parts["feature"] = cfg.lambda_feature * sum(
                    F.mse_loss(adapt(s_features[name]), t_features[t_name])
                    for name, t_name, adapt in zip(student.layers, student.teacher_layers, student.adapters))
            backward(sum(parts.values()))
            logs.update({f"loss_{g}_{k}": v.detach() for k, v in parts.items()})
            fakes[f"src_{g}"], fakes[f"fake_{g}"] = src.detach(), out.detach()
        return logs, fakes

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per translation: the input, the teacher's output, the student's, and the ground truth
        where the data is paired."""
        rows = {}
        for tr in self.directions:
            src = batch[tr.source]
            rows[f"real_{tr.source}"] = src
            if tr.generator in self.teachers:
                rows[f"teacher_{tr.target}"] = self.teachers[tr.generator](src)
            rows[f"fake_{tr.target}"] = self.generators[tr.generator](src)
            if self.paired:
                rows[f"real_{tr.target}"] = batch[tr.target]
        return rows
