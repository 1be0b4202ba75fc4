"""The contract between a model family and the engine, and the pieces families share.

A family owns its networks and says how to score a batch; the :class:`~translate.engine.Trainer`
does everything else (optimisers, schedules, AMP, checkpoints, logging, monitoring)::

    generators: nn.ModuleDict      # what export sees, by name ("G", or "G_AB" and "G_BA")
    discriminators: nn.ModuleDict
    discriminator_loss(batch, fakes, backward) -> logs
    generator_loss(batch, backward) -> (logs, fakes)   # called with the discriminators frozen
    sample(batch) -> dict[str, Tensor]                 # rows of the sample grid, in order

``backward(loss)`` back-propagates a loss and accumulates its gradients (AMP scaling included). A
family calls it once with its total loss, or once per independent part of the loss as soon as that
part is computed: the gradients are the same (the gradient of a sum is the sum of the gradients),
but each part's graph is freed before the next is built, which bounds memory. CycleGAN's generator
step so holds two generator graphs at a time instead of six.

``fakes`` are the detached outputs of a generator step. The trainer hands them to the next
discriminator step, which so judges the fakes of the generator as it was before its last update,
exactly as the reference does (it updates D right after G on the fakes G made), without running
the generators a second time. With ``fakes=None`` (the first step, and the extra critic steps of
``n_critic > 1``) the discriminator step makes its own, without gradients.

In ``sample``'s result, keys starting ``real_`` are data and ``fake_`` are generated; the monitor
compares their diversity to spot mode collapse.

Besides the losses, a family declares what the commands need to know about it (class attributes
and hooks with defaults, below), so that no code outside ``models/`` asks for a family by name:
its ``family`` name and ``config_class``, the ``data`` its batches hold, whether it is
``generative`` (noise, and labels when ``conditional``, in) and which ``translations`` it offers
otherwise, its ``train_defaults`` and ``recipes``, the data ``layouts`` it accepts, ``check_config``,
whether its discriminator ``needs_double_backward``, ``generator_side`` (what the generator step
trains besides the generators), ``refresh_norm_stats`` for averaged generators and
``prepare_sample_batch``. A new family is one file: a subclass registered with
:func:`translate.models.register`.

For distillation (``models/distill.py``) a :class:`Translation` also names the discriminator that
judges it, and a family may say its batches' kind per config (``data_of``), the teacher it was
distilled from (``distilled_from``) and what training loads besides its weights (``setup_training``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..engine.losses import TARGET_LOSSES, AdversarialLoss
from ..engine.noise import InstanceNoise
from ..engine.replay import ReplayBuffer
from ..engine.stabilisers import Stabilisers
from ..nn import NLayerDiscriminator, PixelDiscriminator, ResnetGenerator, UnetGenerator, init_weights, unet_depth_for

Batch = dict[str, Any]
Need = Callable[[bool, str], None]  # need(condition, message): raise ConfigError(message) unless condition
Fakes = dict[str, torch.Tensor]  # detached generator outputs, reused by the next discriminator step
Logs = dict[str, torch.Tensor]  # scalar tensors; the trainer turns them into numbers when it logs
Backward = Callable[[torch.Tensor], None]

# ``--recipe small-data`` of the translator families, for a few hundred images or fewer: adaptive
# differentiable augmentation of everything the discriminator sees, with lazy R1 on the real images
# (chosen over spectral norm by measurement on 100 facades pairs: docs/results.md)
SMALL_DATA_RECIPE: dict[str, Any] = {"d_augment": "color,translation,cutout", "ada_target": 0.6, "r1_gamma": 1.0,
                                     "r1_every": 16}


def build_generator(cfg: Any, size: int, in_channels: int, out_channels: int) -> nn.Module:
    if cfg.generator.startswith("resnet_"):
        n_blocks = int(cfg.generator.removeprefix("resnet_").removesuffix("blocks"))
        net = ResnetGenerator(in_channels, out_channels, ngf=cfg.ngf, n_blocks=n_blocks, norm=cfg.norm,
                              dropout=cfg.dropout, upsample=cfg.upsample, width=cfg.width, blocks=cfg.blocks,
                              antialias=cfg.antialias)
    else:
        net = UnetGenerator(in_channels, out_channels, depth=unet_depth_for(size), ngf=cfg.ngf, norm=cfg.norm,
                            dropout=cfg.dropout, upsample=cfg.upsample, width=cfg.width, blocks=cfg.blocks)
    return init_weights(net, cfg.init, cfg.init_gain)


def build_discriminator(cfg: Any, in_channels: int) -> nn.Module:
    norm = cfg.d_norm or cfg.norm
    if cfg.discriminator == "pixel":
        net = PixelDiscriminator(in_channels, ndf=cfg.ndf, norm=norm)
    else:
        net = NLayerDiscriminator(in_channels, ndf=cfg.ndf, n_layers=cfg.n_layers, norm=norm)
    return init_weights(net, cfg.init, cfg.init_gain)


@dataclass(frozen=True)
class Translation:
    """One direction an image-to-image family offers: the generator that translates it, the
    domain it reads, and the discriminator that judges its outputs (a distillation trains a
    student against it)."""

    direction: str  # "AtoB" | "BtoA"
    generator: str  # a key of ``generators``
    source: str  # "A" | "B"
    discriminator: str = ""  # a key of ``discriminators``; "": the family's only one
    conditional: bool = False  # the discriminator judges (input, output) pairs, concatenated on channels

    @property
    def target(self) -> str:
        return "B" if self.source == "A" else "A"


class GANModel(nn.Module):
    """Base class holding what every family shares: the adversarial loss (with label tricks),
    instance noise for the discriminator's inputs, replay buffers of past fakes, and the
    discriminator's small-data stabilisers (augmentation, R1, LeCam; ``engine/stabilisers.py``)."""

    # --- what the family is: declared by each family, read by the commands ----------------------
    family: ClassVar[str] = ""  # the name --model takes
    config_class: ClassVar[type]  # the dataclass of the family's own options; it has a gan_loss field
    data: ClassVar[str] = "paired"  # batches hold "paired" or "unpaired" A/B images, or "images" (+ labels)
    generative: ClassVar[bool] = False  # noise (and labels) in, images out; otherwise it translates images
    conditional: ClassVar[bool] = False  # class labels in (a generative family)
    default_for: ClassVar[tuple[str, ...]] = ()  # data layouts it trains when --model is not given
    layouts: ClassVar[tuple[str, ...]] = ()  # the data layouts it trains on at all; empty: any its data kind reads
    train_defaults: ClassVar[dict[str, Any]] = {}  # TrainConfig defaults of its own (under recipes and options)
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}  # --recipe NAME -> options under the user's own

    generators: nn.ModuleDict
    discriminators: nn.ModuleDict

    @classmethod
    def translations(cls, cfg: Any) -> list[Translation]:
        """The directions the run of config ``cfg`` (a RunConfig) translates; none for a generative family."""
        return []

    @classmethod
    def data_of(cls, cfg: Any) -> str:
        """The ``data`` batches of the run of config ``cfg`` hold (a distillation: its teacher's)."""
        return cls.data

    @classmethod
    def distilled_from(cls, cfg: Any) -> str | None:
        """The checkpoint folder whose generators the run of ``cfg`` was distilled from (its teacher),
        which ``translate eval`` then compares it with; None for a run trained on its own."""
        return None

    @classmethod
    def offers(cls, needs: str) -> bool:
        """Can a run of this family be scored by a metric that needs ``needs`` (see ``metrics.Metric``)?"""
        return {"ground_truth": not cls.generative, "inception": True, "classes": cls.conditional}.get(needs, False)

    @classmethod
    def check_config(cls, cfg: Any, need: Need) -> None:
        """Check the family's own options (ranges, choices) in the RunConfig ``cfg``."""

    def __init__(self, cfg: Any, train: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.adv = AdversarialLoss(cfg.gan_loss, label_smoothing=train.label_smoothing,
                                   noisy_labels=train.noisy_labels, label_flip=train.label_flip)
        self.instance_noise = InstanceNoise(train.instance_noise, 1)
        self.pools: dict[str, ReplayBuffer] = {}
        self.stabilisers = Stabilisers(train, cfg.gan_loss)
        self.aux_weight_g = float(getattr(cfg, "aux_classifier", 0.0))  # AC-GAN's weight in G's loss (annealable)

    # --- hooks the trainer and the commands call (defaults for families that need nothing) ------
    def setup_training(self, open_checkpoint: Callable[[str], Any]) -> None:
        """Called by ``translate train`` on the model it trains (never on one built to export or
        score), before a checkpoint is restored into it: load what training needs besides the
        model's own weights, and set starting weights that come from elsewhere. A distillation
        loads its frozen teacher here and starts its discriminators from the teacher's.
        ``open_checkpoint(path)`` opens a checkpoint folder (a ``run.Checkpoint``)."""

    @property
    def needs_double_backward(self) -> bool:
        """The discriminator loss back-propagates through a gradient (WGAN-GP's penalty, R1): no
        compiled graph, and no synchronised batch norm, for the discriminators."""
        return self.adv.kind == "wgan-gp" or self.stabilisers.needs_double_backward

    def generator_side(self) -> dict[str, nn.Module]:
        """The networks the generator phase trains, by name: the generators, and any network that
        learns with them without being one (CUT's projection heads). One optimiser (with the
        generators' learning rate and schedule) holds all their parameters; each gets its gradient
        norm logged and its gradients averaged across processes. Export, EMA and the sample grids
        see ``generators`` only; a network registered on the model is checkpointed either way."""
        return dict(self.generators)

    def refresh_norm_stats(self, net: nn.Module, seed: int) -> None:
        """Re-estimate an averaged (EMA) generator copy's normalisation statistics; ``seed`` is the
        run's, so training, export and eval see the same statistics."""

    def prepare_sample_batch(self, batch: Batch, seed: int) -> Batch:
        """The fixed batch the sample grids show (a generative family adds its fixed latents)."""
        return batch

    def set_schedule(self, step: int, total_steps: int, noise_steps: int | None) -> None:
        """Called before each step: anneals instance noise linearly to 0, adapts the augmentation."""
        self.instance_noise.anneal_steps = max(1, noise_steps if noise_steps else total_steps // 2)
        self.instance_noise.set_step(step)
        self.stabilisers.set_step(step)

    def step_logs(self) -> Logs:
        """Values the trainer logs each step beside the losses (the adaptive augmentation probability)."""
        return self.stabilisers.logs()

    def after_discriminator_step(self) -> None:
        """WGAN weight clipping (a no-op for other losses)."""
        for d in self.discriminators.values():
            self.adv.clip_(d)

    @property
    def d_loss_keys(self) -> tuple[str, ...]:
        """Discriminator losses whose collapse to 0 the health monitor watches."""
        return () if self.adv.kind in ("wgan", "wgan-gp") else tuple(f"loss_{n}" for n in self.discriminators)

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint beside the weights (the replay buffers, the stabilisers' state)."""
        state = {f"pool.{name}.{k}": v for name, pool in self.pools.items() for k, v in pool.state_dict().items()}
        state.update(self.stabilisers.state_dict())
        return state

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        device = next(self.parameters()).device
        for name, pool in self.pools.items():
            prefix = f"pool.{name}."
            pool.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                 device=device)
        self.stabilisers.load_state_dict({k: v for k, v in tensors.items() if k.startswith(("aug.", "lecam."))},
                                         device=device)

    # --- shared helpers ----------------------------------------------------------------------
    def d_score(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor, real_label: torch.Tensor | None = None,
                fake_label: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator loss on one real and one fake batch, halved for the target-based losses
        as the reference does, plus the gradient penalty for WGAN-GP (lambda 10 as in the paper).
        Both inputs are augmented (``d_augment``) and get instance noise. A class-conditional ``d``
        also takes each batch's labels (the penalty's interpolates take the real ones). The
        stabilisers add R1 (on its steps) and LeCam."""
        def critic(x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
            return d(x) if label is None else d(x, label)

        name, st = self._d_name(d), self.stabilisers
        real_in = real.detach().requires_grad_(True) if st.r1_due() else None  # R1: the gradient at the data
        real_n = self.instance_noise(st.augment(name, real if real_in is None else real_in))
        fake_n = self.instance_noise(st.augment(name, fake.detach()))
        real_out = critic(real_n, real_label)
        aux = self._aux_loss(d, real_label, "real")  # AC-GAN: the classifier learns from real images only
        fake_out = critic(fake_n, fake_label)
        twin = self._aux_loss(d, fake_label, "fake")  # TAC-GAN: the twin classifier learns from fakes only
        aux = aux if twin is None else aux + twin
        loss = self.adv.d_loss(real_out, fake_out)
        if self.adv.kind in TARGET_LOSSES:
            loss = 0.5 * loss
        penalty = self.adv.penalty(lambda x: critic(x, real_label), real_n, fake_n)
        loss = loss if penalty is None else loss + penalty
        extra = st.d_penalty(name, real_out, fake_out, real_in)
        loss = loss if extra is None else loss + extra
        return loss if aux is None else loss + aux

    def g_score(self, d: nn.Module, fake: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        x = self.instance_noise(self.stabilisers.augment(self._d_name(d), fake))
        loss = self.adv.g_loss(d(x) if label is None else d(x, label))
        aux = self._aux_loss(d, label, "generator")  # AC-GAN: fakes should be classified as the label they were
        return loss if aux is None else loss + aux  # drawn for (TAC-GAN: and not be told apart from others of it)

    def _d_name(self, d: nn.Module) -> str:
        """The name of discriminator ``d`` (the stabilisers keep their state per discriminator)."""
        return next((name for name, net in self.discriminators.items() if net is d), "D")

    def _aux_loss(self, d: nn.Module, label: torch.Tensor | None, seen: str) -> torch.Tensor | None:
        """The auxiliary classifiers' loss from the logits ``d``'s last forward left, or None.
        ``seen``: ``real`` (D's step on real images: ``aux_classifier`` x the classifier's
        cross-entropy), ``fake`` (D's step on fakes: the same for the twin classifier of TAC-GAN,
        when ``d`` has one), ``generator`` (G's step: ``aux_weight_g`` x the classifier's
        cross-entropy, minus the twin's: TAC-GAN's unbiased form of AC-GAN's term, which otherwise
        rewards the easiest-to-classify sample of each class)."""
        weight = float(getattr(self.cfg, "aux_classifier", 0.0))
        logits = getattr(d, "class_logits", None)
        if not weight or label is None or logits is None:
            return None
        twin = getattr(d, "twin_logits", None)
        if seen == "real":
            return weight * F.cross_entropy(logits.float(), label)
        if seen == "fake":
            return None if twin is None else weight * F.cross_entropy(twin.float(), label)
        loss = F.cross_entropy(logits.float(), label)
        if twin is not None:
            loss = loss - F.cross_entropy(twin.float(), label)
        return self.aux_weight_g * loss

    # --- the contract ------------------------------------------------------------------------
    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        raise NotImplementedError

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        raise NotImplementedError

    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError
