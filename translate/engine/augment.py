"""Differentiable augmentation of what the discriminator sees (DiffAugment, Zhao et al. 2020), and
its adaptive probability (StyleGAN2-ADA, Karras et al. 2020).

With few training images a discriminator memorises them: its verdict on real images becomes
certain, its gradients stop telling the generator anything about the data, and quality falls
(on a few hundred images, within the first few thousand steps). Augmenting the *real* images alone
would teach the generator to draw augmented images. DiffAugment applies the same random
transforms to real and fake images alike, every time the discriminator looks at them, in the
generator's step too; since each transform is differentiable, the generator's gradient passes
through it. So the discriminator never sees the same real image twice, and the generator is still
pulled towards un-augmented data (the transforms' distribution is "undone" because both sides go
through it).

Transforms (each on images in [-1, 1], per image, with random parameters of its own):
- ``color``: brightness (+ U[-0.5, 0.5]), saturation (x U[0, 2] around the pixel's channel mean),
  contrast (x U[0.5, 1.5] around the image mean);
- ``translation``: an integer shift of up to 1/8 of each side, the uncovered border zero (gray);
- ``cutout``: a square of half each side set to zero (gray), somewhere in the image.

A paired discriminator sees an (input, output) pair as one tensor of ``group``-channel images
concatenated along the channels (pix2pix: 3 + 3). Every transform then draws one set of
parameters per pair: both halves move, lose the same square and change colour alike (saturation
and contrast are computed per half, so a label map's colours never mix into the photo's).

Each transform is applied to each image with probability ``p`` (1 for plain DiffAugment). In
adaptive mode (:class:`AdaptiveAugment`) ``p`` starts at 0 and follows the discriminator's
overfitting: every ``interval`` steps, ``r = E[sign(D(real))]`` (how sure D is on the real images
it trains on) is compared with ``target`` (0.6) and ``p`` moves up or down by
``interval / speed_steps``, so it can cross from 0 to 1 in ``speed_steps`` steps (StyleGAN2-ADA's
rule, counted in steps instead of images). Random numbers come from the global torch RNG, which
checkpoints hold, and are drawn whether or not a transform ends up applied, so ``p`` does not
change what later draws give: a resumed run augments exactly as an uninterrupted one.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(text: str | None) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> the transforms in the order they run; unknown names raise
    ValueError."""
    if not text:
        return ()
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return tuple(n for n in POLICIES if n in names)


def _applied(n: int, p: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """A per-image (n,) mask: True with probability ``p`` (drawn whatever ``p`` is)."""
    draw = torch.rand(n, device=device)
    return draw < (p.to(device) if torch.is_tensor(p) else p)


def _where(mask: torch.Tensor, value: torch.Tensor, neutral: float) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (value.dim() - 1))), value, torch.full_like(value, neutral))


def color(x: torch.Tensor, p: torch.Tensor | float, group: int) -> torch.Tensor:
    n, c, h, w = x.shape
    g = x.view(n, c // group, group, h, w)
    dev = x.device
    shape = (n, 1, 1, 1, 1)
    on = _applied(n, p, dev)
    brightness = _where(on, torch.rand(shape, device=dev, dtype=x.dtype) - 0.5, 0.0)
    on = _applied(n, p, dev)
    saturation = _where(on, torch.rand(shape, device=dev, dtype=x.dtype) * 2.0, 1.0)
    on = _applied(n, p, dev)
    contrast = _where(on, torch.rand(shape, device=dev, dtype=x.dtype) + 0.5, 1.0)
    g = g + brightness
    mean = g.mean(dim=2, keepdim=True)
    g = (g - mean) * saturation + mean
    mean = g.mean(dim=(2, 3, 4), keepdim=True)
    g = (g - mean) * contrast + mean
    return g.reshape(n, c, h, w)


def translation(x: torch.Tensor, p: torch.Tensor | float, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    on = _applied(n, p, dev)
    ty = torch.randint(-sy, sy + 1, (n,), device=dev) * on
    tx = torch.randint(-sx, sx + 1, (n,), device=dev) * on
    if sy == 0 and sx == 0:
        return x
    pw = w + 2 * sx
    padded = F.pad(x, (sx, sx, sy, sy)).reshape(n, c, -1)
    # output (i, j) reads input (i - ty, j - tx), i.e. padded (i - ty + sy, j - tx + sx)
    window = (torch.arange(h, device=dev)[:, None] * pw + torch.arange(w, device=dev)).reshape(1, -1)
    index = (window + ((sy - ty) * pw + (sx - tx))[:, None]).unsqueeze(1).expand(n, c, h * w)
    return padded.gather(2, index).reshape(n, c, h, w)  # a gather: its backward is a scatter-add


def cutout(x: torch.Tensor, p: torch.Tensor | float, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    n, c, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    on = _applied(n, p, dev)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1), device=dev) - ch // 2
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1), device=dev) - cw // 2
    ys, xs = torch.arange(h, device=dev)[None], torch.arange(w, device=dev)[None]
    in_y = (ys >= oy) & (ys < oy + ch)  # (n, h)
    in_x = (xs >= ox) & (xs < ox + cw)  # (n, w)
    cut = in_y[:, :, None] & in_x[:, None, :] & on[:, None, None]
    return x * (~cut).unsqueeze(1).to(x.dtype)


def augment(x: torch.Tensor, policy: tuple[str, ...], p: torch.Tensor | float = 1.0,
            group: int | None = None) -> torch.Tensor:
    """``x`` (N, C, H, W) through the transforms of ``policy``, each applied to each image with
    probability ``p``. ``group``: channels per image when ``x`` holds several images concatenated
    (default 3 when C is a multiple of 3, else C)."""
    if not policy:
        return x
    c = x.shape[1]
    group = group or (3 if c % 3 == 0 else c)
    if c % group:
        raise ValueError(f"{c} channels do not split into images of {group}")
    for name in policy:
        if name == "color":
            x = color(x, p, group)
        elif name == "translation":
            x = translation(x, p)
        else:
            x = cutout(x, p)
    return x


class AdaptiveAugment:
    """DiffAugment for one discriminator, at a fixed probability ``p`` (default 1) or (``target`` >
    0) an adaptive one starting at ``p`` (default 0). Its state (the probability and the
    overfitting signal gathered since the last adjustment) is tensors, checkpointed by the model
    (:meth:`state_dict`)."""

    def __init__(self, policy: tuple[str, ...], p: float | None = None, *, target: float = 0.0, interval: int = 4,
                 speed_steps: int = 500, threshold: float = 0.0) -> None:
        self.policy = policy
        self.adaptive = target > 0
        self.target, self.interval, self.speed_steps = target, interval, speed_steps
        self.threshold = threshold  # D's output above which it calls an image real (0 for logits, 0.5 for lsgan)
        # the probability: fixed (default 1), or where the adaptive one starts (default 0)
        self.p = torch.tensor(float(p if p is not None else 0.0 if self.adaptive else 1.0))
        self.signs = torch.zeros(())  # sum of sign(D(real) - threshold) since the last adjustment
        self.count = torch.zeros(())

    def __call__(self, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        return augment(x, self.policy, self.p, group)

    @torch.no_grad()
    def observe(self, real_out: torch.Tensor) -> None:
        """Gather the overfitting signal from D's outputs on the (augmented) real images."""
        if not self.adaptive:
            return
        out = real_out.detach().float()
        self.signs = self.signs.to(out.device) + torch.sign(out - self.threshold).sum()
        self.count = self.count.to(out.device) + out.numel()

    @torch.no_grad()
    def adjust(self, step: int, reduce=None) -> None:
        """At every ``interval``-th step, move ``p`` towards keeping ``E[sign(D(real))]`` at the
        target. ``reduce``: sums the signal over training processes (all of them call this)."""
        if not self.adaptive or step == 0 or step % self.interval:
            return
        stats = torch.stack([self.signs, self.count.to(self.signs.device)])
        if reduce is not None:
            stats = reduce(stats)
        rate = stats[0] / stats[1].clamp_min(1.0)
        move = torch.sign(rate - self.target) * (self.interval / self.speed_steps) * (stats[1] > 0)
        self.p = (self.p.to(rate.device) + move).clamp(0.0, 1.0)
        self.signs, self.count = torch.zeros_like(self.signs), torch.zeros_like(self.count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"p": self.p.detach().cpu().clone(), "signs": self.signs.detach().cpu().clone(),
                "count": self.count.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        if not state:
            return
        self.p = state["p"].to(device).clone()
        self.signs = state["signs"].to(device).clone()
        self.count = state["count"].to(device).clone()
