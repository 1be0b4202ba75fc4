"""Unconditional DCGAN (Radford et al. 2016): noise -> image, on the engine's shared losses,
trainer, checkpoints and monitor. The class-conditional family (``conditional.py``) extends it.

A batch is ``{"image": reals, "label": classes}`` (labels unused here). The generator's latent is
drawn inside the step from the global torch RNG, which the trainer checkpoints, so a resumed run
draws the same latents. The sample batch adds fixed latents ``z`` (and ``fake_label``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import DCGANConfig, TrainConfig
from ..engine.replay import ReplayBuffer
from ..nn.dcgan import DCGANDiscriminator, DCGANGenerator, level_of, levels_for, progressive_reals, progressive_stage
from ..nn.layers import INITS, equalize_lr, init_weights
from .base import Backward, Batch, Fakes, GANModel, Logs, Need
from .registry import register


def sample_latents(n: int, dim: int, kind: str = "normal", *, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """z ~ N(0, I); ``spherical``: projected onto the sphere of radius sqrt(dim), where nearly all of
    a high-dimensional Gaussian's mass lies (White 2016), so no sample comes from the sparse centre."""
    z = torch.randn(n, dim, generator=generator, device=device if generator is None else "cpu").to(device)
    if kind == "spherical":
        z = z * (math.sqrt(dim) / z.norm(dim=1, keepdim=True).clamp_min(1e-8))
    return z


@register
class DCGAN(GANModel):
    family = "dcgan"
    config_class = DCGANConfig
    data = "images"
    generative = True
    default_for = ("images",)
    train_defaults = {"batch_size": 64, "flip": False, "n_samples": 20, "epochs": 25, "decay_from": 1.0, "size": 28}
    recipes = {"stable": {"label_smoothing": 0.1, "instance_noise": 0.1, "minibatch_std": 4, "latent": "spherical",
                          "ema": 0.999}}

    @classmethod
    def check_config(cls, cfg, need: Need) -> None:
        t, m = cfg.train, cfg.model
        try:
            levels_for(t.size)
        except ValueError as exc:
            need(False, f"--size {t.size}: {exc}")
        need(t.size <= 1024, f"--size {t.size} is too large for a DCGAN (at most 1024)")
        need(m.latent_dim >= 1, "latent_dim must be at least 1")
        need(m.latent in ("normal", "spherical"), f"latent must be normal or spherical, not {m.latent!r}")
        need(m.ngf >= 1 and m.ndf >= 1, "ngf and ndf must be at least 1")
        need(m.channels in (0, 1, 3), f"channels must be 0 (from the data), 1 or 3, not {m.channels}")
        need(m.norm in ("batch", "none"), f"norm must be batch or none for {t.model}, not {m.norm!r}")
        need(m.d_norm in (None, "batch", "none"), f"d_norm must be batch or none, not {m.d_norm!r}")
        need(m.init in INITS, f"unknown init {m.init!r}; choose one of {', '.join(INITS)}")
        need(0.0 <= m.dropout < 1.0, "dropout must be in [0, 1)")
        need(m.noise_injection >= 0, "noise_injection must be >= 0")
        need(m.pool_size >= 0, "pool_size must be >= 0")
        need(m.minibatch_std >= 0 and m.minibatch_discrimination >= 0,
             "minibatch_std (a group size) and minibatch_discrimination (kernels) must be >= 0")
        need(m.progressive_steps >= 1, "progressive_steps must be at least 1")
        if m.progressive and m.progressive_start:
            try:
                level_of(t.size, m.progressive_start)
            except ValueError as exc:
                need(False, f"progressive_start: {exc}")

    def __init__(self, cfg: DCGANConfig, train: TrainConfig) -> None:
        super().__init__(cfg, train)
        n_classes = getattr(cfg, "n_classes", 0) if self.conditional else 0
        g = DCGANGenerator(cfg.latent_dim, train.size, cfg.channels or 3, ngf=cfg.ngf, norm=cfg.norm,
                           n_classes=n_classes, conditioning=getattr(cfg, "conditioning", "concat"),
                           embed_dim=getattr(cfg, "embed_dim", 50), pixel_norm=cfg.pixel_norm,
                           noise=cfg.noise_injection, dropout=cfg.dropout, progressive=cfg.progressive)
        d = DCGANDiscriminator(train.size, cfg.channels or 3, ndf=cfg.ndf, norm=cfg.d_norm or cfg.norm,
                               n_classes=n_classes, minibatch_std=cfg.minibatch_std,
                               minibatch_discrimination=cfg.minibatch_discrimination, progressive=cfg.progressive,
                               aux_classifier=bool(getattr(cfg, "aux_classifier", 0.0)) and n_classes > 0,
                               twin_classifier=bool(getattr(cfg, "twin_classifier", False)),
                               class_minibatch_std=bool(getattr(cfg, "class_minibatch_std", False)))
        for net in (g, d):
            init_weights(net, cfg.init, cfg.init_gain)
            if cfg.equalized_lr:
                equalize_lr(net)
        self.generators = nn.ModuleDict({"G": g})
        self.discriminators = nn.ModuleDict({"D": d})
        self.pools = {"D": ReplayBuffer(cfg.pool_size, seed=train.seed)}
        self.start_level = level_of(train.size, cfg.progressive_start) if cfg.progressive_start else 0

    # --- schedule ------------------------------------------------------------------------------
    def set_schedule(self, step: int, total_steps: int, noise_steps: int | None) -> None:
        super().set_schedule(step, total_steps, noise_steps)
        if self.cfg.progressive:
            g, d = self.generators["G"], self.discriminators["D"]
            g.stage = d.stage = progressive_stage(step, self.start_level, g.k, self.cfg.progressive_steps)

    @property
    def stage(self) -> float:
        return self.generators["G"].stage

    # --- pieces ----------------------------------------------------------------------------------
    def latents(self, n: int, device: torch.device) -> torch.Tensor:
        return sample_latents(n, self.cfg.latent_dim, self.cfg.latent, device=device)

    def fake_labels(self, batch: Batch) -> torch.Tensor | None:
        """The classes fakes are drawn for: those of the real batch (conditional only)."""
        return None

    def generate(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        return self.generators["G"](z, label)

    @torch.no_grad()
    def refresh_norm_stats(self, net: nn.Module, seed: int, batches: int = 16, batch_size: int = 64) -> None:
        """Re-estimate the batch-norm running statistics of a generator copy (the EMA one) from its
        own outputs ("standing statistics", Brock et al. 2019). The EMA weights are an average, but
        running statistics copied from the live generator describe the live weights' activations:
        measured on MNIST, sampling an EMA cgan with them gave 10 % class accuracy, with its own
        statistics 68 %. Fixed latents and labels from ``seed``; the global RNG is untouched."""
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms:
            return
        device = next(net.parameters()).device
        gen = torch.Generator().manual_seed(seed)
        saved = [(m, m.momentum) for m in norms]
        was_training = net.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        net.train()
        try:
            for _ in range(batches):
                z = sample_latents(batch_size, self.cfg.latent_dim, self.cfg.latent, generator=gen, device=device)
                y = (torch.randint(0, self.cfg.n_classes, (batch_size,), generator=gen).to(device)
                     if self.conditional else None)
                net(z, y)
        finally:
            for m, momentum in saved:
                m.momentum = momentum
            net.train(was_training)

    def prepare_sample_batch(self, batch: Batch, seed: int) -> Batch:
        """Fixed latents (and labels) for the sample grids: the same every time, drawn from ``seed``."""
        n = batch["image"].shape[0]
        batch = dict(batch)
        batch["z"] = sample_latents(n, self.cfg.latent_dim, self.cfg.latent,
                                    generator=torch.Generator().manual_seed(seed))
        if self.conditional:  # the real images' classes, so that each fake sits above a real of its class
            real = batch.get("label")
            ok = real is not None and bool((real >= 0).all()) and bool((real < self.cfg.n_classes).all())
            batch["fake_label"] = real.clone() if ok else torch.arange(n) % self.cfg.n_classes
        return batch

    # --- the contract --------------------------------------------------------------------------
    def discriminator_loss(self, batch: Batch, fakes: Fakes | None, backward: Backward) -> Logs:
        real = batch["image"]
        label = batch.get("label") if self.conditional else None
        if fakes is None:
            with torch.no_grad():
                y = self.fake_labels(batch)
                fakes = {"fake": self.generate(self.latents(real.shape[0], real.device), y)}
                if y is not None:
                    fakes["label"] = y
        fake_label = fakes.get("label")
        if fake_label is None:
            fake = self.pools["D"](fakes["fake"])
        else:
            fake, fake_label = self.pools["D"](fakes["fake"], fake_label)
        if self.cfg.progressive:
            g = self.generators["G"]
            real = progressive_reals(real, self.stage, g.base, g.k)
        loss = self.d_score(self.discriminators["D"], real, fake, label, fake_label)
        backward(loss)
        return {"loss_D": loss.detach()}

    def generator_loss(self, batch: Batch, backward: Backward) -> tuple[Logs, Fakes]:
        real = batch["image"]
        y = self.fake_labels(batch)
        fake = self.generate(self.latents(real.shape[0], real.device), y)
        loss = self.g_score(self.discriminators["D"], fake, y)
        backward(loss)
        out = {"fake": fake.detach()}
        if y is not None:
            out["label"] = y
        return {"loss_G": loss.detach()}, out

    @torch.no_grad()
    def sample(self, batch: Batch) -> dict[str, torch.Tensor]:
        fake = self.generate(batch["z"], batch.get("fake_label") if self.conditional else None)
        return {"fake_image": fake, "real_image": batch["image"]}
