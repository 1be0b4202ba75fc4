"""Discriminators: the PatchGAN (70x70 at the default 3 layers) and the 1x1 pixel discriminator."""
from __future__ import annotations

import torch
from torch import nn

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
