"""``translate distill``: a small, fast student of a trained translator, and how it compares.

The distillation itself is a model family (``models/distill.py``) trained by the ordinary engine,
so its run directory is like any other: ``translate export``, ``run``, ``eval``, ``report``,
``serve`` and ``train --resume`` take it as it is. This module builds its config from the teacher's
run, trains it, and measures student against teacher:

- cost: multiply-accumulates (torch's FLOP counter, halved, over one image of the exported graph's
  trace shape) and the parameters of the exported network;
- speed: onnxruntime CPU images per second of both exports, measured in alternating turns in the
  same process (the machine may be noisy: the ratio is the figure to quote);
- quality: both scored on the same held-out images (L1 / PSNR / SSIM against the ground truth
  where the data is paired, FID / KID), and the student's PSNR against the teacher's outputs.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig
from .errors import CheckpointError, DataError
from .fileio import atomic_write_text, json_safe

log = logging.getLogger("translate.distill")

SPEED_ROUNDS = 3
SPEED_SECONDS = 1.0  # per model per round (at least 3 images)


# --- the config ----------------------------------------------------------------------------------
def build_config(source: str | Path, *, width: float = 0.25, blocks: str = "standard",
                 generators: list[str] | tuple[str, ...] = (), steps: int | None = None, epochs: int | None = None,
                 options: dict[str, Any] | None = None) -> RunConfig:
    """The config of a distillation of the run (or checkpoint folder) ``source``: the teacher's
    training options (its data, held-out files, size, batch, learning rates, seed, length) with the
    ``distill`` family's; ``options`` (``--set``) override either."""
    from .config import split_options
    from .models import family, validate
    from .models.distill import DistillConfig
    from .run import config_hash, open_checkpoint

    ckpt = open_checkpoint(source)
    tcfg = ckpt.config
    t = dataclasses.replace(tcfg.train, model="distill", recipe=None)
    if steps is not None or epochs is not None:
        t.steps, t.epochs = steps, epochs
    m = DistillConfig(teacher=str(ckpt.path.resolve()), teacher_step=ckpt.step, teacher_hash=config_hash(tcfg),
                      teacher_config=tcfg.to_dict(), students=",".join(generators), width=width, blocks=blocks,
                      gan_loss=tcfg.model.gan_loss, pool_size=int(getattr(tcfg.model, "pool_size", 0)))
    train_kw, model_kw = split_options(dict(options or {}), DistillConfig, "distill", "command line")
    for k, v in train_kw.items():
        setattr(t, k, v)
    for k, v in model_kw.items():
        setattr(m, k, v)
    cfg = RunConfig(train=t, model=m)
    from .config import need

    family("distill").check_config(cfg, need)  # a teacher that cannot be distilled: say so first
    validate(cfg)
    return cfg


def default_run_dir(cfg: RunConfig, root: str | Path = "checkpoints") -> Path:
    """``checkpoints/<teacher run>-distill-w<width>[-mobile]`` (numbered when taken)."""
    m = cfg.model
    teacher = Path(m.teacher)
    name = teacher.parent.name if teacher.name.startswith("step-") or teacher.name == "best" else teacher.name
    base = Path(root) / f"{name}-distill-w{m.width:g}{'-mobile' if m.blocks == 'mobile' else ''}"
    path, k = base, 2
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def distill(cfg: RunConfig, run_dir: Path, *, quiet: bool = False, stop_at: int | None = None) -> dict[str, Any]:
    """Train the distillation ``cfg`` in ``run_dir`` (an ordinary ``translate train`` run)."""
    from .train import train

    log.info("distilling %s (step %d) into %s: width %g, %s blocks", cfg.model.teacher, cfg.model.teacher_step,
             run_dir, cfg.model.width, cfg.model.blocks)
    return train(cfg, run_dir, quiet=quiet, stop_at=stop_at)


# --- cost and speed ----------------------------------------------------------------------------------
def deployed_parameters(net) -> int:
    """The parameters of what export traces (a distilled student without its training adapters)."""
    own = getattr(net, "deployed_parameters", None)
    return int(own()) if callable(own) else sum(p.numel() for p in net.parameters())


def count_macs(net, side: int) -> int:
    """Multiply-accumulates of one ``side`` x ``side`` image through ``net`` as exported (plain
    convolutions, noise on): torch's FLOP counter, halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .nn import set_winograd
    from .nn.layers import seeded_noise
    from .nn.winograd import WinogradConv2d

    layers = [m for m in net.modules() if isinstance(m, WinogradConv2d)]
    before = [m.enabled for m in layers]
    was_training = net.training
    set_winograd(net, False)
    net.eval()
    try:
        x = torch.zeros(1, 3, side, side, device=next(net.parameters()).device)
        with torch.no_grad(), seeded_noise(net, True, torch.zeros(1, dtype=torch.int64)), \
                FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        for m, on in zip(layers, before):
            m.enabled = on
        net.train(was_training)
    return int(counter.get_total_flops()) // 2


def onnx_speed(models: dict[str, Path], images: np.ndarray, *, rounds: int = SPEED_ROUNDS,
               seconds: float = SPEED_SECONDS, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """onnxruntime CPU images per second of each model on ``images`` (float32 NCHW in [-1, 1]),
    one image per call, in ``rounds`` turns of about ``seconds`` per model, so that every model
    meets the machine in each of its moods; the median of the turns and each turn."""
    from .runtime import Translator

    translators = {k: Translator(p, provider="cpu", threads=threads, tile=0, batch_size=1, seed=0)
                   for k, p in models.items()}
    seeds = np.arange(len(images), dtype=np.int64)
    for t in translators.values():  # warm-up
        t.infer(images[:1], seeds[:1])
    rates: dict[str, list[float]] = {k: [] for k in translators}
    for _ in range(rounds):
        for k, t in translators.items():
            n, start = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - start < seconds:
                i = n % len(images)
                t.infer(images[i:i + 1], seeds[i:i + 1])
                n += 1
            rates[k].append(n / (time.perf_counter() - start))
    return {k: {"img_s": statistics.median(v), "rounds": [round(r, 3) for r in v]} for k, v in rates.items()}


# --- the comparison ----------------------------------------------------------------------------------
def compare(source: str | Path, *, data: str | Path | None = None, split: str = "val", direction: str | None = None,
            limit: int | None = None, inception: str | Path | None = None, fid: bool = True,
            student_results: dict[str, Any] | None = None, speed: bool = True) -> dict[str, Any] | None:
    """Student against teacher for the distilled run (or checkpoint folder) ``source``: cost, speed
    and quality per direction (see the module docs). None for a run with no teacher."""
    from .evaluate import build_scorer, directions_of, translate_batch
    from .export import probe_side
    from .metrics import paired_scores
    from .models import family_of
    from .run import open_checkpoint

    ckpt = open_checkpoint(source)
    cfg = ckpt.config
    teacher_path = family_of(cfg).distilled_from(cfg)
    if teacher_path is None:
        return None
    if not Path(teacher_path).is_dir():
        log.warning("no comparison with the teacher: %s is gone", teacher_path)
        return None
    tr_all = directions_of(cfg, direction)
    students = ckpt.generators([tr.generator for tr in tr_all])
    teacher_ckpt = open_checkpoint(teacher_path)
    teachers = teacher_ckpt.generators(list(students))
    first = next(iter(students.values()))
    out: dict[str, Any] = {"teacher": str(teacher_path), "teacher_step": teacher_ckpt.step,
                           "teacher_model": teacher_ckpt.config.train.model, "student_step": first.step,
                           "width": cfg.model.width, "blocks": cfg.model.blocks, "directions": {}}

    # quality: both on the same images, with the same noise seeds
    scorer = None
    try:
        scorer, description = build_scorer(cfg, split=split, data=data, direction=direction, limit=limit,
                                           inception=inception, fid=fid, seed=cfg.train.seed, checkpoint=ckpt)
        out["images"] = description
    except DataError as exc:
        out["images"] = f"no quality scores: {exc}"
        log.warning("comparison without quality scores: %s", exc)

    if scorer is not None:
        teacher_results = scorer({name: g.net for name, g in teachers.items()})
        if not student_results or any(tr.direction not in student_results for tr in tr_all):
            student_results = scorer({name: g.net for name, g in students.items()})
    for tr in tr_all:
        s, t = students[tr.generator], teachers[tr.generator]
        side = probe_side(s.net, cfg.train.size)
        row: dict[str, Any] = {"generator": tr.generator, "side": side}
        row["teacher"] = {"macs": count_macs(t.net, side), "params": deployed_parameters(t.net)}
        row["student"] = {"macs": count_macs(s.net, side), "params": deployed_parameters(s.net)}
        if scorer is not None:
            x = scorer.data.A if tr.source == "A" else scorer.data.B
            per = paired_scores(translate_batch(s.net, x, seed=cfg.train.seed),
                                translate_batch(t.net, x, seed=cfg.train.seed))  # the same noise seeds
            row["teacher"].update(_summary(teacher_results[tr.direction]))
            row["student"].update(_summary(student_results[tr.direction]))
            row["student"]["psnr_vs_teacher"] = float(np.mean(per["psnr"]))
            row["student"]["l1_vs_teacher"] = float(np.mean(per["l1"]))
        out["directions"][tr.direction] = row

    if speed:
        _measure_speed(out, tr_all, {"teacher": teacher_ckpt, "student": ckpt}, scorer)
    return out


def _measure_speed(out: dict[str, Any], translations: list, checkpoints: dict[str, Any], scorer) -> None:
    """onnxruntime CPU img/s of the teacher and the student of each of ``translations``, both exported
    from ``checkpoints`` and timed in alternating turns on (up to 8 of) the scored images, or on noise
    when there are none; into ``out``'s rows."""
    from .export import export_generator
    from .images import resize, to_float
    from .runtime import cpu_count

    with tempfile.TemporaryDirectory(prefix="translate-compare-") as tmp:
        for tr in translations:
            row = out["directions"][tr.direction]
            paths = {who: export_generator(c.path, generator=tr.generator, out=Path(tmp) / f"{who}.onnx",
                                           overwrite=True, quiet=True).path for who, c in checkpoints.items()}
            if scorer is not None:
                images = (scorer.data.A if tr.source == "A" else scorer.data.B)[:8]
                x = to_float(np.stack([resize(im, row["side"]) for im in images]))
            else:
                x = np.random.default_rng(0).uniform(-1, 1, (8, 3, row["side"], row["side"])).astype(np.float32)
            speeds = onnx_speed(paths, x, rounds=SPEED_ROUNDS, seconds=SPEED_SECONDS)  # read now: tests shorten them
            for who in checkpoints:
                row[who]["ort_img_s"] = speeds[who]["img_s"]
                row[who]["ort_rounds"] = speeds[who]["rounds"]
    out["speed"] = (f"onnxruntime CPU provider, fp32, batch 1, {cpu_count()} threads, {SPEED_ROUNDS} alternating "
                    f"rounds of about {SPEED_SECONDS:g} s per model; median")


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if k in ("n", "l1", "psnr", "ssim", "fid", "kid", "kid_std")}


def format_comparison(comparison: dict[str, Any]) -> str:
    """The comparison as a table per direction: teacher, student, and the ratio that matters."""
    from .metrics import METRIC

    lines = [(f"student (width {comparison['width']:g}, {comparison['blocks']} blocks, step "
              f"{comparison['student_step']}) against its teacher {comparison['teacher']} "
              f"({comparison['teacher_model']}, step {comparison['teacher_step']})")]
    for direction, row in comparison["directions"].items():
        t, s = row["teacher"], row["student"]
        side = row["side"]
        rows = [[f"{direction} ({row['generator']})", "teacher", "student", "student vs teacher"],
                [f"MACs ({side}x{side})", _si(t["macs"]), _si(s["macs"]), _times(t["macs"], s["macs"], "fewer")],
                ["parameters", _si(t["params"]), _si(s["params"]), _times(t["params"], s["params"], "fewer")]]
        if "ort_img_s" in s:
            rows.append(["onnxruntime CPU img/s", f"{t['ort_img_s']:.1f}", f"{s['ort_img_s']:.1f}",
                         _times(s["ort_img_s"], t["ort_img_s"], "faster")])
        for name in ("l1", "psnr", "ssim", "fid", "kid"):
            if t.get(name) is None and s.get(name) is None:
                continue
            m = METRIC[name]
            diff = (s[name] - t[name]) * m.scale if s.get(name) is not None and t.get(name) is not None else None
            signed = "-" if diff is None else m.fmt.replace("{:", "{:+").format(diff)
            rows.append([m.label, m.format(t), m.format(s), signed])
        if "psnr_vs_teacher" in s:
            rows.append(["PSNR dB vs teacher's output", "-", f"{s['psnr_vs_teacher']:.2f}", ""])
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines.append("")
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                  for r in rows]
    if "images" in comparison:
        lines.append(f"quality on {comparison['images']}")
    if "speed" in comparison:
        lines.append(f"speed: {comparison['speed']}")
    return "\n".join(lines)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:g}"


def _times(a: float, b: float, word: str) -> str:
    return f"{a / b:.1f}x {word}" if b else "-"


# --- translate eval of a distilled run ---------------------------------------------------------------
def evaluate_with_teacher(source: str | Path, *, data: str | Path | None = None, split: str = "val",
                          direction: str | None = None, limit: int | None = None,
                          inception: str | Path | None = None, fid: bool = True,
                          speed: bool = True) -> dict[str, Any]:
    """``translate eval``: the run's scores (``evaluate.evaluate_run``), and for a distilled run the
    comparison with its teacher under ``comparison`` (in the written eval file too)."""
    from .evaluate import evaluate_run

    report = evaluate_run(source, data=data, split=split, direction=direction, limit=limit, inception=inception,
                          fid=fid)
    try:
        comparison = compare(source, data=data, split=split, direction=direction, limit=limit, inception=inception,
                             fid=fid, student_results=report["results"], speed=speed)
    except CheckpointError as exc:  # the teacher damaged or changed: the student's own scores stand
        log.warning("no comparison with the teacher: %s", exc)
        comparison = None
    if comparison is not None:
        report["comparison"] = comparison
        written = report.pop("written")
        atomic_write_text(Path(written), json.dumps(json_safe(report), indent=2) + "\n")
        report["written"] = written
    return report
