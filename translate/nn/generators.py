"""Generators for image-to-image translation: the ResNet (CycleGAN) and U-Net (pix2pix) designs.

At default arguments both equal the reference implementation (Zhu et al. 2017, Isola et al. 2017)
layer for layer, so parameter counts and receptive fields match published models.

Both also take a ``width`` (``ngf`` scaled by it, and every channel count with it) and
``blocks="mobile"`` (depthwise-separable convolutions: GAN Compression's mobile ResNet, Li et al.
2020): the small, fast students of ``translate distill``. Each names the layers whose activations a
student learns from its teacher (``feature_layers``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn

from .layers import (UPSAMPLES, BlurDownsample, NoiseDropout, blur_upsample, conv_bias_for, get_norm_layer,
                     upsample_layer)
from .winograd import WinogradConv2d


class ResnetBlock(nn.Module):
    """conv3x3-norm-ReLU-[dropout]-conv3x3-norm with a residual connection and reflection padding."""

    def __init__(self, channels: int, *, norm: str, dropout: float = 0.0) -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            WinogradConv2d(channels, channels, bias=bias),
            norm_layer(channels),
            nn.ReLU(True),
        ]
        if dropout > 0:
            layers.append(NoiseDropout(dropout))
        layers += [nn.ReflectionPad2d(1), WinogradConv2d(channels, channels, bias=bias), norm_layer(channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


BLOCKS = ("standard", "mobile")


def scaled(channels: int, width: float) -> int:
    """``channels`` x ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


def separable_conv(in_ch: int, out_ch: int, kernel_size: int, *, norm: str, bias: bool, stride: int = 1,
                   padding: int = 0, transpose: bool = False) -> list[nn.Module]:
    """A depthwise-separable convolution (MobileNet; GAN Compression's ``SeparableConv2d``): a
    ``kernel_size`` convolution of each channel on its own, a norm, then a 1x1 convolution that
    mixes the channels: ``k*k + out_ch`` multiply-adds per input channel and pixel instead of
    ``k*k*out_ch``. ``transpose``: the depthwise part upsamples (a transposed convolution)."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return [conv(in_ch, in_ch, kernel_size, stride=stride, padding=padding, groups=in_ch, bias=bias),
            get_norm_layer(norm)(in_ch), nn.Conv2d(in_ch, out_ch, 1, bias=bias)]


def evenly(candidates: list[str], n: int) -> list[str]:
    """``n`` of ``candidates`` spread evenly from the first to the last (all of them when there are fewer)."""
    if n < 1:
        raise ValueError(f"feature layers: ask for at least 1, not {n}")
    if n == 1:
        return candidates[-1:]
    picks = sorted({round(i * (len(candidates) - 1) / (n - 1)) for i in range(n)})
    return [candidates[i] for i in picks]


class MobileResnetBlock(nn.Module):
    """:class:`ResnetBlock` with depthwise-separable 3x3 convolutions (GAN Compression's mobile
    ResNet block): pad-separable-norm-ReLU-[dropout]-pad-separable-norm, plus the input."""

    def __init__(self, channels: int, *, norm: str, dropout: float = 0.0) -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), *separable_conv(channels, channels, 3, norm=norm, bias=bias),
                                   norm_layer(channels), nn.ReLU(True)]
        if dropout > 0:
            layers.append(NoiseDropout(dropout))
        layers += [nn.ReflectionPad2d(1), *separable_conv(channels, channels, 3, norm=norm, bias=bias),
                   norm_layer(channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """c7s1-64, d128, d256, ``n_blocks`` x R256, u128, u64, c7s1-3 with a tanh output.

    Args:
        in_channels, out_channels: image channels.
        ngf: filters in the first layer (64).
        n_blocks: residual blocks (9 for 256 px, 6 for 128 px in the paper).
        norm: ``instance`` (default), ``batch`` or ``none``.
        dropout: NoiseDropout probability inside the residual blocks (0 = none, CycleGAN default).
        upsample: ``transpose`` (reference) or ``resize`` (bilinear + conv).
        width: ``ngf`` times this (rounded), and so every channel count (0.25: 16, 32, 64 channels).
        blocks: ``standard`` or ``mobile`` (depthwise-separable convolutions in the residual blocks).
        antialias: anti-aliased resampling, as CUT's reference: each downsampling is a stride-1
            convolution followed by a blur and a subsampling (:class:`BlurDownsample`), each
            upsampling a blur upsampling followed by a stride-1 convolution (``upsample`` is then
            not used). Off: the CycleGAN reference's strided and transposed convolutions.

    Input sides must be divisible by 4.

    Feature taps (CUT's PatchNCE reads the encoder through them): ``taps`` names the activations
    :meth:`encode` and :meth:`forward_taps` return: ``input`` (the reflection-padded image),
    ``down1`` and ``down2`` (the outputs of the two downsampling convolutions, before their norm),
    ``block1`` ... ``block<n_blocks>`` (the residual blocks' outputs); ``tap_channels`` gives
    their channels.
    """

    size_multiple = 4
    min_side = 8  # the reflection padding at 1/4 resolution needs sides of at least 2 there

    def __init__(self, in_channels: int = 3, out_channels: int = 3, *, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: float = 0.0, upsample: str = "transpose", width: float = 1.0,
                 blocks: str = "standard", antialias: bool = False) -> None:
        super().__init__()
        if blocks not in BLOCKS:
            raise ValueError(f"unknown blocks {blocks!r}; choose one of {', '.join(BLOCKS)}")
        ngf = scaled(ngf, width)
        norm_layer = get_norm_layer(norm)
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        taps = {"input": 0}  # tap name -> index in self.model of the layer whose output it is
        channels = {"input": in_channels}
        ch = ngf
        for i in range(2):  # downsampling
            # antialias: the same convolution at stride 1, then blur-pool. Direct convolutions: on these
            # large, narrow maps Winograd's tile transforms cost more than they save (2.5-4x slower here)
            if antialias:
                layers.append(nn.Conv2d(ch, ch * 2, 3, padding=1, bias=bias))
            else:
                layers.append(nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias))
            taps[f"down{i + 1}"], channels[f"down{i + 1}"] = len(layers) - 1, ch * 2
            # (an identity norm would hand the tapped tensor to an in-place ReLU)
            layers += [norm_layer(ch * 2), nn.ReLU(norm != "none")]
            if antialias:
                layers.append(BlurDownsample(ch * 2))
            ch *= 2
        # what feature distillation may tap: the downsampled features, then each residual block's output
        self._taps = [f"model.{len(layers) - 1 + i}" for i in range(n_blocks + 1)]
        block = MobileResnetBlock if blocks == "mobile" else ResnetBlock
        for i in range(n_blocks):
            layers.append(block(ch, norm=norm, dropout=dropout))
            taps[f"block{i + 1}"], channels[f"block{i + 1}"] = len(layers) - 1, ch
        for _ in range(2):  # upsampling
            if antialias:
                layers += [blur_upsample(), nn.Conv2d(ch, ch // 2, 3, padding=1, bias=bias)]
            else:
                layers += upsample_layer(ch, ch // 2, kind=upsample, kernel_size=3, bias=bias, reflect=True)
            layers += [norm_layer(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.taps, self.tap_channels = taps, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def feature_layers(self, n: int = 4) -> list[str]:
        """Names of ``n`` submodules whose outputs feature distillation compares, spread evenly
        from the downsampled features to the last residual block (``model.9``, ``model.12``,
        ``model.15``, ``model.18`` for ResNet-9, the layers GAN Compression takes)."""
        return evenly(self._taps, n)

    def encode(self, x: torch.Tensor, taps: Sequence[str]) -> list[torch.Tensor]:
        """The activations at ``taps``, in that order; runs the network only as deep as the deepest."""
        return self._tapped(x, taps, full=False)[1]

    def forward_taps(self, x: torch.Tensor, taps: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The output, and the activations at ``taps`` on the way (one pass)."""
        return self._tapped(x, taps, full=True)

    def _tapped(self, x: torch.Tensor, taps: Sequence[str], full: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        unknown = [t for t in taps if t not in self.taps]
        if unknown:
            raise ValueError(f"unknown feature tap(s) {', '.join(unknown)}; this generator has {', '.join(self.taps)}")
        at = [self.taps[t] for t in taps]
        stop = len(self.model) if full else max(at, default=-1) + 1
        found: dict[int, torch.Tensor] = {}
        for i in range(stop):
            x = self.model[i](x)
            if i in at:
                found[i] = x
        return x, [found[i] for i in at]


def unet_depth_for(size: int) -> int:
    """Down-samplings that take a ``size`` x ``size`` image to 1 x 1 (8 for 256 px, 7 for 128 px)."""
    if size < 32 or size & (size - 1):
        raise ValueError(f"the U-Net needs a power-of-two image size of at least 32, got {size}")
    return int(math.log2(size))


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: ``depth`` stride-2 4x4 convolutions down, transposed convolutions up,
    skip connections joining mirrored layers (encoder C64-C128-C256-C512-C512..., decoder mirrored).

    Args:
        depth: number of down-samplings; ``unet_depth_for(size)`` gives the reference choice
            (8 for 256 px, the ``unet_256`` network). Input sides must be divisible by 2**depth.
        ngf: filters in the outermost layer (64).
        norm: ``batch`` (pix2pix default), ``instance`` or ``none``.
        dropout: NoiseDropout probability in the inner decoder blocks (the ``depth - 5`` blocks
            with ``8 * ngf`` channels on both sides), the generator's noise; 0 disables.
        upsample: ``transpose`` (reference) or ``resize``.
        width: ``ngf`` times this (rounded), and so every channel count.
        blocks: ``standard`` or ``mobile``: depthwise-separable convolutions in every down- and
            up-sampling but the outermost two (which read or write the image's 3 channels).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, *, depth: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: float = 0.5, upsample: str = "transpose", width: float = 1.0,
                 blocks: str = "standard") -> None:
        super().__init__()
        if depth < 5:
            raise ValueError(f"U-Net depth must be at least 5, got {depth}")
        if blocks not in BLOCKS:
            raise ValueError(f"unknown blocks {blocks!r}; choose one of {', '.join(BLOCKS)}")
        ngf, mobile = scaled(ngf, width), blocks == "mobile"
        self.size_multiple = 2 ** depth
        self.min_side = self.size_multiple
        norm_layer = get_norm_layer(norm)
        bias = conv_bias_for(norm)
        chans = [ngf * min(2 ** k, 8) for k in range(depth)]  # channels after each down-sampling

        self.down = nn.ModuleList()
        self.down.append(nn.Conv2d(in_channels, chans[0], 4, stride=2, padding=1, bias=bias))
        for k in range(1, depth):
            innermost = k == depth - 1
            layers = [nn.LeakyReLU(0.2, True), nn.Conv2d(chans[k - 1], chans[k], 4, stride=2, padding=1, bias=bias)]
            if mobile:  # no norm between the innermost's two halves: its 1x1 maps hold one value per channel
                layers[1:] = separable_conv(chans[k - 1], chans[k], 4, norm="none" if innermost else norm, bias=bias,
                                            stride=2, padding=1)
            if not innermost:
                layers.append(norm_layer(chans[k]))
            self.down.append(nn.Sequential(*layers))

        # up[k] undoes down[k]; its input is down[k]'s output (innermost) or the concatenation of
        # down[k]'s output with up[k+1]'s output (the skip connection).
        self.up = nn.ModuleList()
        self._taps = []  # each inner up-sampling's normalised output (before its dropout), outermost first
        for k in range(depth):
            in_ch = chans[k] if k == depth - 1 else 2 * chans[k]
            if k == 0:
                layers = [nn.ReLU(True), *upsample_layer(in_ch, out_channels, kind=upsample, kernel_size=4, bias=True),
                          nn.Tanh()]
            else:
                layers = [nn.ReLU(True), *upsample_layer(in_ch, chans[k - 1], kind=upsample, kernel_size=4, bias=bias),
                          norm_layer(chans[k - 1])]
                if mobile:
                    layers[1:-1] = _mobile_upsample(in_ch, chans[k - 1], kind=upsample, norm=norm, bias=bias)
                self._taps.append(f"up.{k}.{len(layers) - 1}")
                if dropout > 0 and 4 <= k <= depth - 2:
                    layers.append(NoiseDropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = self.up[-1](skips[-1])
        for k in range(len(self.up) - 2, -1, -1):
            x = self.up[k](torch.cat([skips[k], x], dim=1))
        return x

    def feature_layers(self, n: int = 4) -> list[str]:
        """Names of ``n`` submodules whose outputs feature distillation compares: the decoder's
        ``n`` outermost inner levels (at 1/2, 1/4, 1/8 and 1/16 of the image for ``n`` = 4), each
        after its norm and before its dropout noise."""
        if n < 1:
            raise ValueError(f"feature layers: ask for at least 1, not {n}")
        return self._taps[:n]


def _mobile_upsample(in_ch: int, out_ch: int, *, kind: str, norm: str, bias: bool) -> list[nn.Module]:
    """:func:`~.layers.upsample_layer` (kernel 4) with its convolution depthwise-separable."""
    if kind == "transpose":
        return separable_conv(in_ch, out_ch, 4, norm=norm, bias=bias, stride=2, padding=1, transpose=True)
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                *separable_conv(in_ch, out_ch, 3, norm=norm, bias=bias, padding=1)]
    raise ValueError(f"unknown upsampling {kind!r}; choose one of {', '.join(UPSAMPLES)}")


@contextlib.contextmanager
def tap_features(net: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward of ``net`` leaves the outputs of its submodules ``names``
    (dotted paths, as ``feature_layers`` gives them) in the yielded dict, gradients and all."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            handles.append(net.get_submodule(name).register_forward_hook(
                lambda module, args, output, name=name: found.__setitem__(name, output)))
        yield found
    finally:
        for h in handles:
            h.remove()
