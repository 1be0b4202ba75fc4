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


_HASH_M = 2147483647  # 2**31 - 1: every product below stays inside int64


def hash_keep_mask(x: torch.Tensor, seeds: torch.Tensor, p: float, salt: int = 0) -> torch.Tensor:
    """A dropout mask that is a pure function of (seed, channel, row, column): keep with probability
    ``1 - p``. Integer arithmetic only, so torch and ONNX Runtime give bit-identical masks for any
    image size, and the exported graph needs no random-number operator.

    ``seeds``: int64, one per sample (shape ``(N,)``), in ``[0, 2**31 - 1)``.
    """
    n, c, h, w = x.shape
    ci = torch.arange(c, device=x.device, dtype=torch.int64).view(1, -1, 1, 1)
    yi = torch.arange(h, device=x.device, dtype=torch.int64).view(1, 1, -1, 1)
    xi = torch.arange(w, device=x.device, dtype=torch.int64).view(1, 1, 1, -1)
    s = (seeds.to(torch.int64).view(-1, 1, 1, 1) * 16807 + salt * 48271) % _HASH_M
    k = (s + ci * 1103515245 + yi * 69069 + xi * 40692) % _HASH_M  # a position, keyed by the seed
    for mult in (48271, 16807):  # square-and-multiply rounds mix neighbouring positions
        k = (k * k) % _HASH_M
        k = (k * mult + s) % _HASH_M
    return k >= int(p * _HASH_M)


class NoiseDropout(nn.Module):
    """Dropout used as the generator's source of noise: it stays active in ``eval()`` mode.

    pix2pix has no latent input; its randomness is this dropout, applied at training *and* test
    time. ``mode`` chooses the behaviour:

    - ``"sample"`` (default): a fresh random mask every call, as in training.
    - ``"fixed"``: a mask that is a function of ``seed`` and the position only
      (:func:`hash_keep_mask`), so the same input always gives the same output, on any device and
      in ONNX Runtime.
    - ``"off"``: identity, i.e. ordinary dropout in eval mode.

    For export, ``seeds`` may hold one int64 seed per sample of the batch (set by the export
    wrapper from a graph input); it then replaces ``seed`` in the fixed mode.
    """

    def __init__(self, p: float = 0.5, mode: str = "sample", seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self.mode = mode
        self.seeds: torch.Tensor | None = None

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
        seeds = self.seeds if self.seeds is not None else torch.full((x.shape[0],), 0, dtype=torch.int64,
                                                                        device=x.device)
        keep = hash_keep_mask(x, seeds, self.p, salt=self.seed)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self._mode!r}"


def set_noise_mode(net: nn.Module, mode: str, seeds: torch.Tensor | None = None) -> nn.Module:
    """Set the mode of every :class:`NoiseDropout` in ``net`` (see its docs); each layer gets its
    own salt, so layers draw different masks from one seed. ``seeds``: per-sample seeds (export)."""
    for i, m in enumerate(net.modules()):
        if isinstance(m, NoiseDropout):
            m.mode = mode
            m.seed = i
            m.seeds = seeds
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
