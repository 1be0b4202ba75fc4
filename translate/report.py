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
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # blank, or the half-written last row of a killed run
            continue
    return rows


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
    return _save_figure(fig, out_path)


def _save_figure(fig, out_path: str | Path) -> Path:
    """A matplotlib figure to a PNG, atomically, and closed."""
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_path


# --- translate report: one self-contained HTML page ---------------------------------------------
MAX_GRIDS = 12  # sample grids shown over time (evenly spread, the last always)


def write_report(run_dir: str | Path, *, out: str | Path | None = None, gallery: int = 8,
                 overwrite: bool = False) -> Path:
    """Write ``RUN/report.html`` (or ``out``): config, loss curves, sample grids over time, the
    scores, the health monitor's warnings and a before / after gallery, every image embedded as a
    data URI so the one file opens anywhere without a server."""
    import html
    import tempfile

    from .errors import CheckpointError, ConfigError
    from .fileio import atomic_write_text
    from .models import family_of
    from .run import BEST_FILE, EVAL_FILE, Run

    run = Run(run_dir)
    run_dir = run.path
    cfg = run.config  # refuses a folder that is not a run, with the fix
    generative = family_of(cfg).generative
    path = Path(out) if out is not None else run.report_path
    if out is not None and path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it, or choose another --out")
    esc = html.escape
    sections: list[str] = []
    t = cfg.train
    warnings, step = _warnings_and_step(run)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # scores
        parts = []
        ev = _read_json(run.path / EVAL_FILE)
        if ev:
            parts.append(f"<p>translate eval of {esc(str(ev.get('checkpoint')))} (step {ev.get('step')}) on "
                         f"{esc(str(ev.get('images')))}. FID network: {esc(str(ev.get('fid_network')))}.</p>")
            parts.append(_scores_table(ev.get("results", {})))
        best = _read_json(run.best_dir / BEST_FILE)
        if best:
            parts.append(f"<p>Best checkpoint by {esc(str(best['metric']))}: {best['value']:.4g} at step "
                         f"{best['step']} (<code>{esc(str(run.best_dir))}</code>).</p>")
        evals = read_metrics(run.evals_path)
        if evals:
            png = plot_eval_history(evals, tmp / "evals.png")
            parts.append(_img(png, f"{evals[-1]['metric']} during training (--eval-every)"))
        if not parts:
            parts.append(f"<p>No scores yet: run <code>translate eval {esc(str(run_dir))}</code> (or train with "
                         f"<code>--eval-every N</code>).</p>")
        sections.append(_section("Scores", "".join(parts)))
        # losses
        png = plot_loss_curves(run.metrics_path, tmp / "losses.png")
        sections.append(_section("Loss curves", _img(png, "losses") if png else "<p>No losses logged yet.</p>"))
        # samples over time
        grids = sorted(run.samples_dir.glob("step-*.png")) if run.samples_dir.is_dir() else []
        if len(grids) > MAX_GRIDS:
            keep = np.linspace(0, len(grids) - 1, MAX_GRIDS).round().astype(int)
            grids = [grids[i] for i in sorted(set(keep.tolist()))]
        body = "".join(_img(g, f"step {int(g.stem.split('-')[1])}") for g in grids)
        sections.append(_section("Samples over time", body or "<p>No sample grids yet.</p>"))
        # gallery
        if gallery > 0:
            try:
                sections.append(_section("Samples (final weights)" if generative else
                                         "Before / after (validation images)", _gallery(run, gallery, tmp)))
            except (ConfigError, CheckpointError, OSError, ValueError) as exc:
                sections.append(_section("Before / after", f"<p>No gallery: {esc(str(exc))}</p>"))
            except Exception as exc:  # noqa: BLE001 - a data error must not cost the rest of the report
                sections.append(_section("Before / after", f"<p>No gallery: {esc(str(exc))}</p>"))
        # health
        if warnings:
            rows = "".join(f"<tr><td>{w[0]}</td><td>{esc(str(w[2]))}</td><td>{esc(str(w[3]))}</td></tr>"
                           for w in warnings)
            body = f"<table><tr><th>step</th><th>warning</th><th>detail</th></tr>{rows}</table>"
        else:
            body = "<p>The health monitor raised no warning.</p>"
        sections.append(_section("Health monitor", body))
        sections.append(_section("Config", f"<pre>{esc(cfg.to_json())}</pre>"))
    title = f"{run_dir.name}: {t.model} report"
    head = (f"<p class='meta'>{esc(t.model)} on {esc(str(t.data or 'the embedded synthetic scenes'))}, "
            f"{t.size} px, step {step} | run <code>{esc(str(run_dir.resolve()))}</code></p>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>{head}{''.join(sections)}</body></html>\n")
    atomic_write_text(path, page)
    return path


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}"
        "h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th{background:#f3f3f3}td:first-child{text-align:left}figure{margin:.8em 0}"
        "figcaption{color:#555;font-size:.9em}img{max-width:100%;image-rendering:pixelated}"
        "pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}.meta{color:#555}")


def _section(title: str, body: str) -> str:
    import html

    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _img(path: Path, caption: str) -> str:
    """An embedded PNG (data URI) with a caption."""
    import base64
    import html

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _warnings_and_step(run) -> tuple[list, int]:
    """The health warnings and step recorded in the run's latest checkpoint (its trainer state
    alone, read with ``weights_only=True``; weights are not loaded)."""
    import torch

    from .engine.checkpoint import TRAINER

    ckpt = run.latest()
    if ckpt is None:
        return [], 0
    try:
        state = torch.load(ckpt.path / TRAINER, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged file: the report still renders
        return [], 0
    return list(state.get("warnings", [])), int(state.get("step", 0))


def _scores_table(results: dict) -> str:
    import html

    from .metrics import metrics_in

    cols = metrics_in(results)
    head = "".join(f"<th>{html.escape(m.label)}</th>" for m in cols)
    rows = []
    for name, r in results.items():
        cells = "".join(f"<td>{html.escape(m.format(r))}</td>" for m in cols)
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{r.get('n', '-')}</td>{cells}</tr>")
    return f"<table><tr><th></th><th>images</th>{head}</tr>{''.join(rows)}</table>"


def plot_eval_history(rows: list[dict], out_path: str | Path) -> Path:
    """The ``--eval-every`` metric over the steps, the best marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = rows[-1]["metric"]
    steps, values = [r["step"] for r in rows], [r["value"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    ax.plot(steps, values, marker="o", linewidth=1.2)
    best = [r for r in rows if r.get("best")]
    if best:
        ax.plot([best[-1]["step"]], [best[-1]["value"]], marker="*", markersize=14, color="tab:red", label="best")
        ax.legend(fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    return _save_figure(fig, out_path)


def _gallery(run, n: int, tmp: Path) -> str:
    """Validation images through the run's generators (input, output, target), or a generative
    run's samples (per class for a conditional one), as one embedded grid."""
    from .evaluate import build_scorer
    from .images import to_float
    from .run import open_checkpoint

    every = open_checkpoint(run.path).generators()
    loaded = next(iter(every.values()))
    scorer, description = build_scorer(loaded.cfg, split="val", limit=n, fid=False, classify=False)
    rows = scorer.gallery({name: g.net for name, g in every.items()}, n)
    png = save_grid({k: to_float(v if v.shape[-1] == 3 else np.repeat(v, 3, -1)) for k, v in rows.items() if len(v)},
                    tmp / "gallery.png")
    weights = "EMA weights" if loaded.ema else "weights"
    what = "samples, seed 0" if loaded.family.generative else description
    return _img(png, f"{what}; {weights} of {loaded.checkpoint.name}")
