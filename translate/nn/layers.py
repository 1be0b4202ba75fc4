"""Small building blocks shared by the generators and discriminators."""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

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
        return functools.partial(InstanceNorm2d, affine=False, track_running_stats=False)
    if kind == "none":
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d``, computed as a group norm with one group per channel (the same maths)
    when it keeps no running statistics. Measured with torch 2.14.1 on the CPU: ``instance_norm``'s
    backward gives wrong input gradients for a batch of one whose incoming gradient is channels_last
    (as under ``channels_last`` training), ``group_norm``'s is right, keeps the memory format and
    is about 2x faster forward + backward at 1x64x256x256. ONNX export keeps InstanceNormalization."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 4 or torch.onnx.is_in_onnx_export():
            return super().forward(x)
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


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
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
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
    return _position_hash(seeds, salt, ci, yi, xi) >= int(p * _HASH_M)


def _position_hash(seeds: torch.Tensor, salt: int, ci: torch.Tensor, yi: torch.Tensor,
                   xi: torch.Tensor) -> torch.Tensor:
    """Integers in [0, 2**31 - 1), a pure function of (seed, salt, channel, row, column)."""
    s = (seeds.to(torch.int64).view(-1, 1, 1, 1) * 16807 + salt * 48271) % _HASH_M
    k = (s + ci * 1103515245 + yi * 69069 + xi * 40692) % _HASH_M  # a position, keyed by the seed
    for mult in (48271, 16807):  # square-and-multiply rounds mix neighbouring positions
        k = (k * k) % _HASH_M
        k = (k * mult + s) % _HASH_M
    return k


def hash_normal(n: int, h: int, w: int, seeds: torch.Tensor, salt: int, device: torch.device) -> torch.Tensor:
    """Standard normal noise ``(n, 1, h, w)`` that is a pure function of (seed, salt, row, column):
    two hashed uniforms through the Box-Muller transform. Like :func:`hash_keep_mask`, it exports
    to ONNX without a random operator."""
    zero = torch.zeros(1, 1, 1, 1, device=device, dtype=torch.int64)
    yi = torch.arange(h, device=device, dtype=torch.int64).view(1, 1, -1, 1)
    xi = torch.arange(w, device=device, dtype=torch.int64).view(1, 1, 1, -1)
    seeds = seeds.to(device).view(-1)[:n] if seeds.numel() >= n else seeds.to(device).view(-1).expand(n)
    # 15-bit uniforms: exact in fp16 too (an fp16 export cannot hold integers past 65504)
    u1 = (torch.div(_position_hash(seeds, 2 * salt + 1, zero, yi, xi), 65536, rounding_mode="floor").float()
          + 0.5) * (1.0 / 32768)
    u2 = torch.div(_position_hash(seeds, 2 * salt + 2, zero, yi, xi), 65536, rounding_mode="floor").float() * (
        1.0 / 32768)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(6.283185307179586 * u2)


class SeededNoise(nn.Module):
    """What the generator's noise layers share: a ``mode`` and the seeds of the fixed mode.

    - ``"sample"`` (default): fresh random noise every call, as in training, also in ``eval()``.
    - ``"fixed"``: noise that is a pure function of the seed and the position (the integer hashes
      :func:`hash_keep_mask` and :func:`hash_normal`), so the same input always gives the same
      output, on any device and in ONNX Runtime.
    - ``"off"``: no noise (identity).

    For export, ``seeds`` may hold one int64 seed per sample of the batch (set by the export
    wrapper from a graph input); it then replaces the default seed 0 in the fixed mode. ``seed`` is
    the layer's salt, so layers draw different noise from one seed.
    """

    def __init__(self, mode: str = "sample", seed: int = 0) -> None:
        super().__init__()
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

    def _fixed_seeds(self, x: torch.Tensor) -> torch.Tensor:
        if self.seeds is not None:
            return self.seeds
        return torch.zeros((x.shape[0],), dtype=torch.int64, device=x.device)


class NoiseDropout(SeededNoise):
    """Dropout used as the generator's source of noise: it stays active in ``eval()`` mode.

    pix2pix has no latent input; its randomness is this dropout, applied at training *and* test
    time (Isola et al. 2017). A noise-to-image generator may use it too (``dropout``). Modes: see
    :class:`SeededNoise`; ``off`` is ordinary eval-mode dropout.
    """

    def __init__(self, p: float = 0.5, mode: str = "sample", seed: int = 0) -> None:
        super().__init__(mode, seed)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or self._mode == "off":
            return x
        if self._mode == "sample":
            return F.dropout(x, self.p, training=True)
        keep = hash_keep_mask(x, self._fixed_seeds(x), self.p, salt=self.seed)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self._mode!r}"


class NoiseInjection(SeededNoise):
    """Gaussian noise added to a generator layer: ``x + w * n`` with one noise image ``n`` per
    sample shared by the channels and a learned per-channel strength ``w`` (StyleGAN's per-layer
    noise; Karras et al. 2019), starting at ``strength``. It gives the generator a source of
    fine, local variation besides the latent, and, like the dropout noise, stays on at test time.
    Modes: see :class:`SeededNoise`."""

    def __init__(self, channels: int, strength: float = 0.1, mode: str = "sample", seed: int = 0) -> None:
        super().__init__(mode, seed)
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), float(strength)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mode == "off":
            return x
        n, _, h, w = x.shape
        if self._mode == "sample":
            noise = torch.randn(n, 1, h, w, device=x.device, dtype=x.dtype)
        else:
            noise = hash_normal(n, h, w, self._fixed_seeds(x), self.seed, x.device).to(x.dtype)
        return x + self.weight.to(x.dtype) * noise

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[1]}, mode={self._mode!r}"


def set_noise_mode(net: nn.Module, mode: str, seeds: torch.Tensor | None = None) -> nn.Module:
    """Set the mode of every noise layer (:class:`SeededNoise`) in ``net``; each layer gets its own
    salt, so layers draw different noise from one seed. ``seeds``: per-sample seeds (export)."""
    for i, m in enumerate(net.modules()):
        if isinstance(m, SeededNoise):
            m.mode = mode
            m.seed = i
            m.seeds = seeds
    return net


@contextlib.contextmanager
def seeded_noise(net: nn.Module, active: bool, seeds: torch.Tensor | None) -> Iterator[nn.Module]:
    """Within the block, ``net``'s noise layers draw from ``seeds`` (one per sample: the exported
    graph's ``noise_seed``, repeatable scores and samples), or are off when not ``active``; they
    sample freely again after."""
    set_noise_mode(net, "fixed" if active else "off", seeds if active else None)
    try:
        yield net
    finally:
        set_noise_mode(net, "sample")


# --- stabilisers for noise-to-image GANs (docs/stabilisers.md) ---------------------------------------
class PixelNorm(nn.Module):
    """Pixelwise feature normalisation (Karras et al. 2018): each pixel's feature vector scaled to
    unit mean square, so no signal magnitude can escalate between generator and discriminator."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class MinibatchStdDev(nn.Module):
    """Appends one feature map: the standard deviation of each feature over a group of samples,
    averaged (Karras et al. 2018). A batch of near-identical fakes (mode collapse) shows a low
    value the discriminator can punish. The group is the largest divisor of the batch size that is
    at most ``group_size``; a single sample gets 0."""

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = next(k for k in range(min(self.group_size, n), 0, -1) if n % k == 0)
        y = x.view(g, n // g, c, h, w).float()
        std = torch.sqrt(y.var(dim=0, unbiased=False) + self.eps).mean(dim=(1, 2, 3))  # (n // g,)
        if g == 1:
            std = torch.zeros_like(std)
        std = std.to(x.dtype).repeat(g).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, std], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016): ``kernels`` features per sample measuring
    how close it is to the other samples of the batch, ``sum_j exp(-||M_i - M_j||_1)`` over learned
    projections ``M``; the discriminator sees them beside its own features, so a batch of look-alike
    fakes is easy to spot. Output: the input with ``kernels`` extra channels (constant over space)."""

    def __init__(self, in_features: int, kernels: int = 32, kernel_dim: int = 8) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        m = (x.flatten(1).float() @ self.T.float()).view(n, self.kernels, self.kernel_dim)
        dist = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (n, n, kernels)
        o = torch.exp(-dist).sum(dim=1) - 1.0  # minus each sample's own term
        return torch.cat([x, o.to(x.dtype).view(n, self.kernels, 1, 1).expand(n, self.kernels, h, w)], dim=1)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017; Miyato &
    Koyama 2018): the label modulates every layer of the generator, not only its input."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(n_classes, channels)
        self.beta = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return self.gamma(label).view(-1, c, 1, 1) * self.bn(x) + self.beta(label).view(-1, c, 1, 1)


class _Scale(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.scale


def equalize_lr(net: nn.Module, gain: float = 2 ** 0.5) -> nn.Module:
    """Equalised learning rate (Karras et al. 2018): every convolution and linear layer keeps its
    weights as N(0, 1) and multiplies them by He's constant ``gain / sqrt(fan_in)`` at run time.
    Adam's step is then equally large relative to every layer's effective weights, so all layers
    learn at the same speed. Done with a parametrisation: the stored weight is
    ``parametrizations.weight.original``; export and ``module.weight`` see the scaled one."""
    from torch.nn.utils import parametrize

    for m in list(net.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not parametrize.is_parametrized(m):
            w = m.weight
            if isinstance(m, nn.ConvTranspose2d):  # each output sees in_channels * (k / stride)^2 inputs
                fan_in = w.shape[0] * w[0, 0].numel() / (m.stride[0] * m.stride[1])
            else:
                fan_in = w[0].numel()
            with torch.no_grad():
                w.normal_(0.0, 1.0)
                if m.bias is not None:
                    m.bias.zero_()
            parametrize.register_parametrization(m, "weight", _Scale(gain / max(fan_in, 1.0) ** 0.5))
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


# --- anti-aliased resampling (Zhang 2019, "Making convolutional networks shift-invariant again") ----
class BlurDownsample(nn.Module):
    """Blur, then subsample by 2: a fixed [1, 2, 1] x [1, 2, 1] / 16 low-pass filter per channel on
    the reflection-padded input, stride 2. It replaces a strided convolution's subsampling, which
    aliases: CUT's generator downsamples with a stride-1 convolution followed by this.

    In training and inference it is computed by :class:`_BlurPool` (strided adds, no padded copy,
    nothing saved for backward: 2.8x faster forward + backward than the depthwise convolution
    here); traced or exported, and for odd sides, as the depthwise convolution, which is the same
    operator (tested). The filter is a constant, not a parameter, and not saved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        kernel = a[:, None] * a[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.shape[2] >= 2 and x.shape[3] >= 2
                and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())):
            return _BlurPool.apply(x)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype), stride=2,
                        groups=x.shape[1])


def _blur_half(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[1, 2, 1] along ``dim`` (even length n), reflected at the edges, at stride 2 (unscaled):
    out[i] = x[2i - 1] + 2 x[2i] + x[2i + 1], with x[-1] = x[1]."""
    m = x.shape[dim] // 2
    pairs = x.unflatten(dim, (m, 2))
    even, odd = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    out = torch.add(odd, even, alpha=2.0)
    out.narrow(dim, 1, m - 1).add_(odd.narrow(dim, 0, m - 1))
    out.narrow(dim, 0, 1).add_(odd.narrow(dim, 0, 1))  # the reflected x[-1]
    return out


def _blur_half_t(g: torch.Tensor, dim: int) -> torch.Tensor:
    """The transpose of :func:`_blur_half`: back to twice the length along ``dim``."""
    m = g.shape[dim]
    out = g.new_empty((*g.shape[:dim], 2 * m, *g.shape[dim + 1:]))
    pairs = out.unflatten(dim, (m, 2))
    pairs.select(dim + 1, 0).copy_(g).mul_(2.0)
    odd = pairs.select(dim + 1, 1).copy_(g)
    odd.narrow(dim, 0, m - 1).add_(g.narrow(dim, 1, m - 1))
    odd.narrow(dim, 0, 1).add_(g.narrow(dim, 0, 1))
    return out


class _BlurPool(torch.autograd.Function):
    """:class:`BlurDownsample` as strided adds, separably (rows, then columns); a linear map, so
    backward needs only its transpose and nothing is kept from forward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _blur_half(_blur_half(x, 2), 3).mul_(1 / 16)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return _blur_half_t(_blur_half_t(g * (1 / 16), 3), 2)


def blur_upsample() -> nn.Module:
    """Upsample by 2 with the [1, 3, 3, 1] transposed blur of anti-aliased networks (edges
    replicated), which is exactly bilinear interpolation with ``align_corners=False``: each new
    pixel is 3/4 of its nearest input pixel and 1/4 of the next (tested against the transposed
    blur). Computed as the interpolation, which is faster and exports as one ONNX Resize."""
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
