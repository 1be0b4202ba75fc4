"""Noise-to-image networks: the DCGAN generator and discriminator (Radford et al. 2016), with the
class conditioning and the stabilisers of later papers as constructor options.

Radford's rules, kept at the defaults: strided (transposed) convolutions instead of pooling, batch
norm in both networks (not on the generator's output nor the discriminator's input layer), ReLU in
the generator with a tanh output, LeakyReLU(0.2) in the discriminator, no fully connected hidden
layers: the latent is projected to the smallest feature map by a transposed convolution whose
kernel is that map, and the discriminator ends in a convolution over its last map.

Resolutions: the image side ``size`` is halved while even and above 7, so 28 -> 14 -> 7,
32 -> 16 -> 8 -> 4, 64 -> ... -> 4. Level ``k`` (0 = smallest) has ``min(ngf * 2**(K-1-k), 8 * ngf)``
channels, ``K`` being the number of doublings (2 for 28 px, 4 for 64 px).

Progressive growing (Karras et al. 2018) in the form of their reference code: the graph always
works at full resolution, and ``stage`` (a float in [start level, K], set by the model from the
step) says which resolution is live. At ``stage = i + a`` the generator's image is the level
``i + 1`` image faded in with weight ``a`` over the upsampled level ``i`` image (each level has a
1x1 ``to_rgb``), then upsampled (nearest) to full size; the discriminator average-pools its input
back to level ``i + 1`` and fades its ``from_rgb`` paths the same way. :func:`progressive_reals`
blurs real images to match. At ``stage = K`` both are the plain networks.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .layers import (ClassMinibatchStdDev, ConditionalBatchNorm2d, MinibatchDiscrimination, MinibatchStdDev,
                     NoiseDropout, NoiseInjection, PixelNorm)

CONDITIONINGS = ("cbn", "concat")


def levels_for(size: int) -> tuple[int, int]:
    """(base resolution, number of doublings) for an image side: (7, 2) for 28, (4, 4) for 64."""
    base, k = size, 0
    while base % 2 == 0 and base > 7:
        base //= 2
        k += 1
    if k < 1 or size < 8:
        raise ValueError(f"a DCGAN needs an image side that halves at least once to 7 or less (28, 32, 64, ...), "
                         f"got {size}")
    return base, k


def level_of(size: int, resolution: int) -> int:
    """The level whose maps are ``resolution`` px (for ``progressive_start``)."""
    base, k = levels_for(size)
    for level in range(k + 1):
        if base * 2 ** level == resolution:
            return level
    raise ValueError(f"{resolution} px is not one of the resolutions of a {size} px DCGAN "
                     f"({', '.join(str(base * 2 ** i) for i in range(k + 1))})")


def channels_at(level: int, k: int, width: int) -> int:
    return min(width * 2 ** (k - 1 - level), 8 * width)


def split_stage(stage: float, k: int) -> tuple[int, float]:
    """``stage`` -> (live level i, fade-in weight a of level i + 1); (k, 0) when fully grown."""
    if stage >= k:
        return k, 0.0
    i = int(math.floor(stage))
    return i, stage - i


def progressive_stage(step: int, start: int, k: int, steps: int) -> float:
    """The schedule: train level ``start`` for ``steps``, then for each next level fade it in over
    ``steps`` and train it for ``steps``; fully grown (``k``) after ``2 * (k - start) * steps``."""
    p = step / max(1, steps)
    grown = start + math.floor(p / 2) + min(1.0, max(0.0, p % 2 - 1.0))
    return float(min(k, grown))


def _up(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="nearest")


def _pool_to(x: torch.Tensor, size: int) -> torch.Tensor:
    f = x.shape[-1] // size
    return x if f == 1 else F.avg_pool2d(x, f)


def progressive_reals(x: torch.Tensor, stage: float, base: int, k: int) -> torch.Tensor:
    """Real images as the discriminator should see them at ``stage``: at level ``i + 1`` detail,
    that detail faded in with weight ``a`` over level ``i``, shown at full size."""
    i, a = split_stage(stage, k)
    if i >= k:
        return x
    size = x.shape[-1]
    hi = _pool_to(x, base * 2 ** (i + 1))
    lo = _up(_pool_to(hi, base * 2 ** i), hi.shape[-1])
    return _up(torch.lerp(lo, hi, a) if a > 0 else lo, size)


class _GBlock(nn.Module):
    """(transposed) conv -> norm (batch / class-conditional batch / none) -> ReLU -> [pixel norm]
    -> [noise injection] -> [dropout noise]."""

    def __init__(self, conv: nn.Module, out_ch: int, *, norm: str, n_classes: int, pixel_norm: bool,
                 noise: float, dropout: float) -> None:
        super().__init__()
        self.conv = conv
        self.cbn = ConditionalBatchNorm2d(out_ch, n_classes) if norm == "cbn" else None
        self.norm = nn.BatchNorm2d(out_ch) if norm == "batch" else nn.Identity()
        post: list[nn.Module] = [nn.ReLU(True)]
        if pixel_norm:
            post.append(PixelNorm())
        if noise > 0:
            post.append(NoiseInjection(out_ch, noise))
        if dropout > 0:
            post.append(NoiseDropout(dropout))
        self.post = nn.Sequential(*post)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        x = self.conv(x)
        x = self.cbn(x, label) if self.cbn is not None else self.norm(x)
        return self.post(x)


class DCGANGenerator(nn.Module):
    """Latent (and label) -> image in [-1, 1].

    Args:
        latent_dim: size of z.
        size: image side (28, 32, 64, ...); channels: 1 (MNIST) or 3.
        ngf: channels of the last feature map (the first has up to 8x).
        norm: ``batch`` (Radford) or ``none`` (e.g. with ``pixel_norm``).
        n_classes: 0 for an unconditional generator.
        conditioning: ``concat`` (a learned ``embed_dim`` label embedding concatenated to z) or
            ``cbn`` (a class-conditional batch norm in every layer).
        pixel_norm: pixelwise feature normalisation after every layer, and on z.
        noise: initial strength of Gaussian noise injected after every layer (0: none).
        dropout: NoiseDropout after every hidden layer (on at test time; 0: none).
        progressive: add the 1x1 ``to_rgb`` layers progressive growing needs.
    """

    def __init__(self, latent_dim: int = 100, size: int = 64, channels: int = 3, *, ngf: int = 64,
                 norm: str = "batch", n_classes: int = 0, conditioning: str = "concat", embed_dim: int = 50,
                 pixel_norm: bool = False, noise: float = 0.0, dropout: float = 0.0,
                 progressive: bool = False) -> None:
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"unknown conditioning {conditioning!r}; choose one of {', '.join(CONDITIONINGS)}")
        self.latent_dim, self.size, self.channels, self.n_classes = latent_dim, size, channels, n_classes
        self.base, self.k = levels_for(size)
        self.stage = float(self.k)
        self.pixel_norm = PixelNorm() if pixel_norm else None
        cond = n_classes > 0
        self.embed = nn.Embedding(n_classes, embed_dim) if cond and conditioning == "concat" else None
        block_norm = "cbn" if cond and conditioning == "cbn" and norm == "batch" else norm
        if cond and conditioning == "cbn" and norm != "batch":
            raise ValueError("conditioning 'cbn' is a batch norm: it needs norm 'batch'; use conditioning 'concat'")
        bias = block_norm == "none"
        in_dim = latent_dim + (embed_dim if self.embed is not None else 0)
        opts = dict(norm=block_norm, n_classes=n_classes, pixel_norm=pixel_norm, noise=noise)
        ch = [channels_at(level, self.k, ngf) for level in range(self.k)]
        self.blocks = nn.ModuleList([_GBlock(nn.ConvTranspose2d(in_dim, ch[0], self.base, 1, 0, bias=bias), ch[0],
                                             dropout=dropout, **opts)])
        for level in range(1, self.k):
            self.blocks.append(_GBlock(nn.ConvTranspose2d(ch[level - 1], ch[level], 4, 2, 1, bias=bias), ch[level],
                                       dropout=dropout, **opts))
        self.out = nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1, bias=False)  # level k: the image (no bias, as
        # the PyTorch DCGAN example, whose parameter count this so matches)
        self.to_rgb = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in ch]) if progressive else None

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes and label is None:
            raise ValueError("this generator is class-conditional: give a label per latent")
        x = z.view(z.shape[0], -1)
        if self.pixel_norm is not None:
            x = self.pixel_norm(x.unsqueeze(-1)).squeeze(-1)
        if self.embed is not None:
            x = torch.cat([x, self.embed(label).to(x.dtype)], dim=1)
        h = x.view(x.shape[0], -1, 1, 1)
        i, a = split_stage(self.stage, self.k) if self.to_rgb is not None else (self.k, 0.0)
        # feature levels needed: up to the live one, and the next while it fades in (level k's image
        # is made from level k - 1's features)
        last = self.k if i >= self.k else min(i + 2 if a > 0 else i + 1, self.k)
        feats = []
        for level in range(last):
            h = self.blocks[level](h, label)
            feats.append(h)
        if i >= self.k:
            return torch.tanh(self.out(h))
        img = torch.tanh(self.to_rgb[i](feats[i]))
        if a > 0:
            nxt = torch.tanh(self.out(feats[-1])) if i + 1 == self.k else torch.tanh(self.to_rgb[i + 1](feats[i + 1]))
            img = torch.lerp(_up(img, nxt.shape[-1]), nxt, a)
        return _up(img, self.size)


class DCGANDiscriminator(nn.Module):
    """Image (and label) -> one logit / critic score per image.

    Args:
        size, channels: as the generator's.
        ndf: channels of the first (full-resolution) convolution.
        norm: ``batch`` (Radford; not on the input layer) or ``none`` (use with WGAN-GP, whose
            penalty is per sample).
        n_classes: 0, or the classes of a projection discriminator (Miyato & Koyama 2018): the
            score is ``linear(phi(x)) + <embed(y), phi(x)>`` with ``phi(x)`` the summed last
            features.
        minibatch_std: group size of the minibatch standard deviation feature (0: off).
        minibatch_discrimination: kernels of minibatch discrimination (0: off).
        progressive: add the 1x1 ``from_rgb`` layers progressive growing needs.
        aux_classifier: also predict the class from ``phi(x)`` (AC-GAN; needs ``n_classes``); each
            forward leaves the logits in ``class_logits``.
        twin_classifier: a second class head (TAC-GAN's twin, trained on fakes), its logits in
            ``twin_logits``; needs ``aux_classifier``.
        class_minibatch_std: one more feature map, the standard deviation of the features among the
            batch's images of each image's class (needs ``n_classes``).
    """

    def __init__(self, size: int = 64, channels: int = 3, *, ndf: int = 64, norm: str = "batch", n_classes: int = 0,
                 minibatch_std: int = 0, minibatch_discrimination: int = 0, progressive: bool = False,
                 aux_classifier: bool = False, twin_classifier: bool = False,
                 class_minibatch_std: bool = False) -> None:
        super().__init__()
        self.size, self.channels, self.n_classes = size, channels, n_classes
        self.base, self.k = levels_for(size)
        self.stage = float(self.k)
        ch = [channels_at(level, self.k, ndf) for level in range(self.k)]
        bias = norm != "batch"
        # down[level] takes level + 1 to level; down[k - 1] reads the image and has no norm (Radford)
        self.down = nn.ModuleList()
        for level in range(self.k):
            in_ch = channels if level == self.k - 1 else ch[level + 1]
            norm_layer = nn.BatchNorm2d(ch[level]) if norm == "batch" and level < self.k - 1 else nn.Identity()
            self.down.append(nn.Sequential(
                nn.Conv2d(in_ch, ch[level], 4, 2, 1, bias=bias or level == self.k - 1), norm_layer,
                nn.LeakyReLU(0.2, True)))
        self.from_rgb = (nn.ModuleList([nn.Sequential(nn.Conv2d(channels, c, 1), nn.LeakyReLU(0.2, True)) for c in ch])
                         if progressive else None)
        extra = []
        if minibatch_std:
            extra.append(MinibatchStdDev(minibatch_std))
        if minibatch_discrimination:
            extra.append(MinibatchDiscrimination((ch[0] + len(extra)) * self.base * self.base,
                                                 minibatch_discrimination))
        self.extra = nn.Sequential(*extra)
        extra_ch = (1 if minibatch_std else 0) + minibatch_discrimination
        self.class_std = ClassMinibatchStdDev(n_classes) if class_minibatch_std and n_classes else None
        extra_ch += 1 if self.class_std is not None else 0
        self.head = nn.Conv2d(ch[0] + extra_ch, 1, self.base, 1, 0)
        self.embed = nn.Embedding(n_classes, ch[0]) if n_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        # AC-GAN (Odena et al. 2017): class logits from the same features; each forward leaves them
        # in ``class_logits`` for the model's auxiliary loss
        self.classifier = nn.Linear(ch[0], n_classes) if aux_classifier and n_classes else None
        self.class_logits: torch.Tensor | None = None
        # TAC-GAN (Gong et al. 2019): a twin head learns the classes of the fakes; G's term subtracts its
        # cross-entropy, which removes AC-GAN's pull towards the easiest sample of each class
        self.twin = nn.Linear(ch[0], n_classes) if twin_classifier and self.classifier is not None else None
        self.twin_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes and label is None:
            raise ValueError("this discriminator is class-conditional: give a label per image")
        i, a = split_stage(self.stage, self.k) if self.from_rgb is not None else (self.k, 0.0)
        if i >= self.k:
            h = self.down[self.k - 1](x)
            start = self.k - 1
        else:
            x_hi = _pool_to(x, self.base * 2 ** (i + 1))
            h = self.from_rgb[i](_pool_to(x_hi, self.base * 2 ** i))
            if a > 0:
                h_hi = self.down[i](x_hi if i + 1 == self.k else self.from_rgb[i + 1](x_hi))
                h = torch.lerp(h, h_hi, a)
            start = i
        for level in range(start - 1, -1, -1):
            h = self.down[level](h)
        feats = self.extra(h)
        if self.class_std is not None:
            feats = torch.cat([feats, self.class_std(h, label)], dim=1)
        out = self.head(feats).view(-1)
        pooled = h.sum(dim=(2, 3))
        if self.embed is not None:
            out = out + (self.embed(label).to(h.dtype) * pooled).sum(dim=1)
        if self.classifier is not None:
            self.class_logits = self.classifier(pooled)
        if self.twin is not None:
            self.twin_logits = self.twin(pooled)
        return out
