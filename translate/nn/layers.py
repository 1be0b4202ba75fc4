"""Small building blocks shared by the generators and discriminators."""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

NORMS = ("batch", "instance", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
UPSAMPLES = ("transpose", "resize")
NOISE_MODES = ("sample", "fixed", "off")


def get_norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """Return a factory ``f(channels) -> norm module``.

    ``batch``: BatchNorm2d with learned affine and running statistics.
    ``instance``: InstanceNorm2d without affine or running statistics (the reference CycleGAN
    choice, so a convolution before it keeps its bias). ``none``: identity.
    """
    if kind == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def conv_bias_for(norm: str) -> bool:
    """A convolution followed by batch norm needs no bias (the norm's shift replaces it)."""
    return norm != "batch"


def init_weights(net: nn.Module, kind: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights (biases to 0) and batch-norm scales, as the reference does.

    ``normal``: N(0, gain); ``xavier``: Xavier-normal with ``gain``; ``kaiming``: He-normal
    (fan_in); ``orthogonal``: orthogonal with ``gain``. Batch-norm weights are N(1, gain).
    """
    if kind not in INITS:
        raise ValueError(f"unknown init {kind!r}; choose one of {', '.join(INITS)}")

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if kind == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif kind == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net


class NoiseDropout(nn.Module):
    """Dropout used as the generator's source of noise: it stays active in ``eval()`` mode.

    pix2pix has no latent input; its randomness is this dropout, applied at training *and* test
    time. ``mode`` chooses the behaviour:

    - ``"sample"`` (default): a fresh random mask every call, as in training.
    - ``"fixed"``: a mask drawn from a fixed seed, so the same input always gives the same output
      (repeatable results, and what export uses when asked for deterministic noise).
    - ``"off"``: identity, i.e. ordinary dropout in eval mode.
    """

    def __init__(self, p: float = 0.5, mode: str = "sample", seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self.mode = mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in NOISE_MODES:
            raise ValueError(f"unknown noise mode {value!r}; choose one of {', '.join(NOISE_MODES)}")
        self._mode = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or self._mode == "off":
            return x
        if self._mode == "sample":
            return F.dropout(x, self.p, training=True)
        # "fixed": one mask per sample position, the same on every call and device.
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        keep = torch.rand(x.shape[1:], generator=g) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self._mode!r}"


def set_noise_mode(net: nn.Module, mode: str) -> nn.Module:
    """Set the mode of every :class:`NoiseDropout` in ``net`` (see its docs)."""
    for i, m in enumerate(net.modules()):
        if isinstance(m, NoiseDropout):
            m.mode = mode
            m.seed = i
    return net


def upsample_layer(in_ch: int, out_ch: int, *, kind: str, kernel_size: int, bias: bool,
                   reflect: bool = False) -> list[nn.Module]:
    """A x2 upsampling convolution.

    ``transpose``: the reference's transposed convolution. ``resize``: bilinear upsampling then a
    3x3 convolution ("resize-convolution", Odena et al. 2016), which avoids checkerboard artefacts.
    """
    if kind == "transpose":
        if kernel_size == 3:
            return [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=bias)]
        return [nn.ConvTranspose2d(in_ch, out_ch, kernel_size, stride=2, padding=1, bias=bias)]
    if kind == "resize":
        from .winograd import WinogradConv2d

        conv = ([nn.ReflectionPad2d(1), WinogradConv2d(in_ch, out_ch, bias=bias)] if reflect
                else [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)])
        return [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), *conv]
    raise ValueError(f"unknown upsampling {kind!r}; choose one of {', '.join(UPSAMPLES)}")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
