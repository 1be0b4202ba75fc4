"""Winograd F(4x4, 3x3) convolution for the CPU (Lavin & Gray 2016).

A 3x3 stride-1 convolution computed on 6x6 input tiles, each giving a 4x4 output tile, with
36 elementwise products in the transformed domain instead of 144 multiply-adds: the work becomes
36 batched matrix products (channels x channels) plus cheap tile transforms. On a CPU without
Winograd kernels in oneDNN (AVX2), this runs the ResNet generator's residual blocks about 1.7x
faster forward + backward. Autograd differentiates it, so training needs nothing else.

It is the same operator as ``nn.Conv2d`` up to float rounding (relative differences ~1e-5), with
the same parameters and state dict. :class:`WinogradConv2d` uses it only where it pays: float32 on
the CPU, no autocast, not while tracing or exporting (ONNX sees a plain convolution).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]


def _kron(m: list) -> torch.Tensor:
    t = torch.tensor(m, dtype=torch.float64)
    return torch.kron(t, t).float()


# Transforms of whole tiles as single matrices: vec(BT d B) = KB vec(d), and so on.
KB, KG, KA = _kron(_BT), _kron(_G), _kron(_AT)  # 36x36, 36x9, 16x36


def _tiles(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Overlapping 6x6 input tiles (stride 4) as a (36, tiles * channels) matrix."""
    n, c = x.shape[:2]
    d = x.unfold(2, 6, 4).unfold(3, 6, 4)  # n, c, th, tw, 6, 6 (a view)
    return d.permute(4, 5, 0, 2, 3, 1).reshape(36, n * th * tw * c)


def _kernels(weight: torch.Tensor, kg: torch.Tensor) -> torch.Tensor:
    """Transformed kernels U = G g G^T for every (in, out) channel pair: (36, in, out)."""
    k, c = weight.shape[:2]
    return (kg @ weight.reshape(k * c, 9).t()).view(36, k, c).transpose(1, 2)


class _Winograd(torch.autograd.Function):
    """Saves only the input and the weight (as a direct convolution does) and recomputes the cheap
    transforms in backward, so the transformed tiles never stay in memory between the passes."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, th: int, tw: int) -> torch.Tensor:
        n, c = x.shape[:2]
        k = weight.shape[0]
        kb, kg, ka = KB.to(x.device), KG.to(x.device), KA.to(x.device)
        v = (kb @ _tiles(x, th, tw)).view(36, n * th * tw, c)
        m = torch.bmm(v, _kernels(weight, kg))  # 36, tiles, k
        y = (ka @ m.view(36, -1)).view(4, 4, n, th, tw, k)
        ctx.save_for_backward(x, weight)
        ctx.shape = (th, tw)
        return y.permute(2, 5, 3, 0, 4, 1).reshape(n, k, th * 4, tw * 4)

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, weight = ctx.saved_tensors
        th, tw = ctx.shape
        n, c, hp, wp = x.shape
        k = weight.shape[0]
        tiles = n * th * tw
        kb, kg, ka = KB.to(x.device), KG.to(x.device), KA.to(x.device)
        # y = KA m  =>  dm = KA^T dy, per 4x4 output tile
        gy_t = gy.reshape(n, k, th, 4, tw, 4).permute(3, 5, 0, 2, 4, 1).reshape(16, tiles * k)
        gm = (ka.t() @ gy_t).view(36, tiles, k)
        gx = gw = None
        if ctx.needs_input_grad[1]:
            v = (kb @ _tiles(x, th, tw)).view(36, tiles, c)
            gu = torch.bmm(v.transpose(1, 2), gm)  # 36, c, k
            gw = (kg.t() @ gu.transpose(1, 2).reshape(36, k * c)).t().reshape(k, c, 3, 3)
        if ctx.needs_input_grad[0]:
            gv = torch.bmm(gm, _kernels(weight, kg).transpose(1, 2))  # 36, tiles, c
            gd = (kb.t() @ gv.view(36, tiles * c)).view(6, 6, n, th, tw, c).permute(2, 5, 3, 0, 4, 1)
            # gd: n, c, th, 6, tw, 6. Tiles overlap by 2 pixels: lay the 4x4 cores down, then add
            # the overlapping right columns, bottom rows and corner.
            # (2 spare rows and columns keep every view below whole tiles; cropped at the end)
            gx = x.new_empty(n, c, th * 4 + 4, tw * 4 + 4)
            gx[:, :, : th * 4, : tw * 4] = gd[:, :, :, :4, :, :4].reshape(n, c, th * 4, tw * 4)
            gx[:, :, th * 4:].zero_()
            gx[:, :, : th * 4, tw * 4:].zero_()

            def shifted(r0: int, c0: int) -> torch.Tensor:  # n, c, th, 4, tw, 4 view starting at (r0, c0)
                return gx[:, :, r0: r0 + th * 4, c0: c0 + tw * 4].unflatten(2, (th, 4)).unflatten(4, (tw, 4))

            shifted(0, 4)[..., :2] += gd[:, :, :, :4, :, 4:]
            shifted(4, 0)[:, :, :, :2] += gd[:, :, :, 4:, :, :4]
            shifted(4, 4)[:, :, :, :2, :, :2] += gd[:, :, :, 4:, :, 4:]
            gx = gx[:, :, : hp, : wp]
        return gx, gw, None, None


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for 3x3 kernels, stride 1, no padding, groups 1."""
    h, w = x.shape[2] - 2, x.shape[3] - 2
    ph, pw = (-h) % 4, (-w) % 4  # pad to whole 4x4 output tiles, crop afterwards
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    y = _Winograd.apply(x, weight, (h + ph) // 4, (w + pw) // 4)
    if ph or pw:
        y = y[:, :, :h, :w]
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


# Below this many 4x4 output tiles per call, the 36 batched products are too small to beat oneDNN's
# direct convolution (measured, 256 channels, fwd + bwd: 16x16 batch 1 (16 tiles) 0.57x, 32x32
# batch 1 (64) 1.08x, 24x24 batch 4 (144) 1.30x, 48x48 batch 1 (144) 2.1x, 64x64 batch 1 (256) 1.46x).
MIN_TILES = 100


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, unpadded ``nn.Conv2d`` that computes with Winograd on the CPU when the
    input is large enough to pay (``MIN_TILES``). ``enabled`` switches it per module
    (see :func:`set_winograd`).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, bias=bias)
        self.enabled = True

    def _use_winograd(self, x: torch.Tensor) -> bool:
        if (not self.enabled or torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()):
            return False  # checked first: the shape arithmetic below would be traced
        return (x.device.type == "cpu" and x.dtype == torch.float32
                and x.dim() == 4 and self.weight.dtype == torch.float32
                and x.shape[0] * -(-(x.shape[2] - 2) // 4) * -(-(x.shape[3] - 2) // 4) >= MIN_TILES
                and not torch.is_autocast_enabled("cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_winograd(x):
            return winograd_conv3x3(x, self.weight, self.bias)
        return super().forward(x)


def set_winograd(net: nn.Module, enabled: bool) -> nn.Module:
    for m in net.modules():
        if isinstance(m, WinogradConv2d):
            m.enabled = enabled
    return net
