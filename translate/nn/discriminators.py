"""Discriminators: the PatchGAN (70x70 at the default 3 layers) and the 1x1 pixel discriminator,
and what pix2pixHD builds on them (multi-scale inputs, feature matching)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .layers import conv_bias_for, get_norm_layer


class NLayerDiscriminator(nn.Module):
    """PatchGAN: classifies overlapping patches as real or fake; outputs a map of logits.

    With ``n_layers=3`` each output sees a 70x70 patch (C64-C128-C256-C512, 4x4 kernels).
    ``in_channels`` is 3 for an unconditional critic and 6 for pix2pix's conditional one, which
    sees the input and output images concatenated.
    """

    def __init__(self, in_channels: int = 3, *, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("PixelGAN"): judges each pixel's colour statistics, not structure."""

    def __init__(self, in_channels: int = 3, *, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=conv_bias_for(norm)),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- pix2pixHD (Wang et al. 2018): multi-scale discriminators and feature matching --------------------
def downscale(x: torch.Tensor) -> torch.Tensor:
    """Half the resolution, for the next discriminator of a multi-scale set: a 3x3 average pool,
    stride 2, border windows averaged over the pixels inside (pix2pixHD's)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


@contextlib.contextmanager
def captured_features(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward of ``net`` appends its intermediate activations to the list
    yielded: the output of every LeakyReLU, which in a PatchGAN is the output of every layer but the
    last (``n_layers + 1`` maps). pix2pixHD's feature matching compares them on real and fake pairs."""
    feats: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda module, args, out: feats.append(out))
             for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    try:
        yield feats
    finally:
        for h in hooks:
            h.remove()
