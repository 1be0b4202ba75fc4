"""Pictures of a run: sample grids and loss curves (the HTML report builds on these)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .fileio import atomic_path
from .images import to_uint8

LABEL_WIDTH = 56


def save_grid(rows: dict, path: str | Path, pad: int = 2) -> Path:
    """One row per entry of ``rows`` (name -> NCHW tensor in [-1, 1]), labelled on the left."""
    named = [(name, to_uint8(images)) for name, images in rows.items()]
    n = max(imgs.shape[0] for _, imgs in named)
    h, w = named[0][1].shape[1:3]
    grid = np.full((len(named) * (h + pad) + pad, LABEL_WIDTH + n * (w + pad) + pad, 3), 255, np.uint8)
    for r, (_, imgs) in enumerate(named):
        for c, img in enumerate(imgs):
            y, x = pad + r * (h + pad), LABEL_WIDTH + pad + c * (w + pad)
            grid[y: y + img.shape[0], x: x + img.shape[1]] = img[:h, :w]
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for r, (name, _) in enumerate(named):
        draw.text((4, pad + r * (h + pad) + h // 2 - 5), name, fill=(0, 0, 0))
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curves(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Loss curves (one panel for discriminator losses, one for the generator's) as a PNG."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    d_keys = [k for k in keys if k.startswith("loss_D")]
    g_keys = [k for k in keys if k not in d_keys]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for ax, group, title in ((axes[0], d_keys, "discriminator"), (axes[1], g_keys, "generator")):
        for k in group:
            ax.plot(steps, [r.get(k, float("nan")) for r in rows], label=k.removeprefix("loss_"), linewidth=1.2)
        ax.set_title(f"{title} losses")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_path
