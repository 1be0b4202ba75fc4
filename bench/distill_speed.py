"""A distilled student against its teacher on the CPU, measured in one run: onnxruntime images/s of
the teacher (fp32), the student (fp32) and the student exported as int8, MACs and parameters, and
the int8 student's PSNR against its fp32 self on held-out images.

    python bench/distill_speed.py checkpoints/p2p-distill-w0.25 checkpoints/p2p-distill-w0.25-mobile \\
        --json bench/results/distill_speed.json

Each RUN is a distilled run (``translate distill``); its teacher is read from its config. Every
model runs one image per call (batch 1) at the training size (``--side`` for another), in
``--rounds`` alternating turns of ``--seconds`` each, so that all of them meet the machine in each
of its moods; the median of the turns is reported, and ratios are taken within the run. The int8
export is calibrated on training images of the run's source domain (never the held-out ones) and
judged on the held-out ones.
"""
from __future__ import annotations

import argparse
import atexit
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def calibration_folder(cfg, source: str, dst: Path, n: int) -> Path:
    """``n`` training images (never held out) of the side the generator reads, as PNG files."""
    from PIL import Image

    from translate.data import TranslationDataset, detect_layout
    from translate.images import to_uint8
    from translate.models import family_of

    t = cfg.train
    ds = TranslationDataset(detect_layout(t.data), size=t.size, load_size=t.size, flip=False,
                            unpaired=family_of(cfg).data_of(cfg) == "unpaired", seed=t.seed, holdout=t.holdout)
    dst.mkdir(parents=True, exist_ok=True)
    picks = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)  # spread over the training images
    for i in picks:
        Image.fromarray(to_uint8(ds[(int(i), 0)][source])).save(dst / f"{i:04d}.png")
    return dst


def held_out(cfg, source: str, side: int, n: int) -> np.ndarray:
    """float32 NCHW: the first ``n`` held-out images of the side the generator reads, at ``side``."""
    from translate.evaluate import build_scorer
    from translate.images import resize, to_float

    scorer, _ = build_scorer(cfg, split="val", limit=n, fid=False, classify=False)
    images = scorer.data.A if source == "A" else scorer.data.B
    return to_float(np.stack([resize(im, side) for im in images]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="distilled runs (translate distill)")
    ap.add_argument("--generator", default=None, help="which student of a multi-generator run [the first]")
    ap.add_argument("--side", type=int, default=None, help="image side [the training size]")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--images", type=int, default=16, help="held-out images timed and compared")
    ap.add_argument("--calibration", type=int, default=32, help="training images calibrating int8")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from translate.distill import count_macs, deployed_parameters, onnx_speed
    from translate.export import export_generator, psnr
    from translate.models import family_of
    from translate.run import load_generator, open_checkpoint
    from translate.runtime import Translator, cpu_count

    tmp = Path(tempfile.mkdtemp(prefix="distill-speed-"))  # the exports and calibration images, removed at exit
    atexit.register(shutil.rmtree, tmp, True)
    models: dict[str, Path] = {}
    info: dict[str, dict] = {}
    first_cfg = None
    for run in args.runs:
        student = load_generator(run, args.generator)
        cfg = student.cfg
        teacher_path = family_of(cfg).distilled_from(cfg)
        if teacher_path is None:
            sys.exit(f"{run} is not a distilled run (translate distill)")
        side = args.side or cfg.train.size
        if first_cfg is None:
            first_cfg = cfg
            teacher = open_checkpoint(teacher_path).generators([student.name])[student.name]
            models["teacher fp32"] = export_generator(teacher_path, generator=student.name, out=tmp / "teacher.onnx",
                                                      quiet=True).path
            info["teacher fp32"] = {"run": str(teacher_path), "macs": count_macs(teacher.net, side),
                                    "params": deployed_parameters(teacher.net)}
            source = student.source_side
            x = held_out(cfg, source, side, args.images)
            calib = calibration_folder(cfg, source, tmp / "calibration", args.calibration)
        elif family_of(cfg).distilled_from(cfg) != teacher_path:
            sys.exit(f"{run} has another teacher than {args.runs[0]}; compare students of one teacher")
        label = f"{run.name}"
        models[f"{label} fp32"] = export_generator(run, generator=student.name, out=tmp / f"{label}.onnx",
                                                   quiet=True).path
        q = export_generator(run, generator=student.name, out=tmp / f"{label}-int8.onnx", int8=True,
                             calibration=calib, quiet=True)
        models[f"{label} int8"] = q.path
        cost = {"run": str(run), "macs": count_macs(student.net, side), "params": deployed_parameters(student.net),
                "width": cfg.model.width, "blocks": cfg.model.blocks}
        info[f"{label} fp32"] = dict(cost)
        info[f"{label} int8"] = dict(cost)

    print(f"{len(models)} models | {side}x{side}, batch 1 | {cpu_count()} threads | onnxruntime {ort.__version__} | "
          f"torch {torch.__version__} | {args.rounds} rounds of {args.seconds:g} s", flush=True)
    speeds = onnx_speed(models, x, rounds=args.rounds, seconds=args.seconds)

    # int8 against fp32 outputs of the same student, on the held-out images (same noise seeds)
    seeds = np.arange(len(x), dtype=np.int64)
    for label in [k for k in models if k.endswith(" int8")]:
        fp32 = Translator(models[label.replace(" int8", " fp32")], provider="cpu", tile=0)
        int8 = Translator(models[label], provider="cpu", tile=0)
        per = [psnr(fp32.infer(x[i:i + 1], seeds[i:i + 1]), int8.infer(x[i:i + 1], seeds[i:i + 1]))
               for i in range(len(x))]
        info[label]["psnr_vs_fp32"] = float(np.mean(per))
        info[label]["psnr_vs_fp32_min"] = float(np.min(per))

    base = speeds["teacher fp32"]["img_s"]
    rows = [["model", "MACs", "params", "img/s", "vs teacher fp32", "PSNR vs fp32 (min)"]]
    for k in models:
        r = {**info[k], **speeds[k]}
        rows.append([k, f"{r['macs'] / 1e6:.1f} M", f"{r['params'] / 1e6:.3f} M", f"{r['img_s']:.1f}",
                     f"{r['img_s'] / base:.2f}x",
                     f"{r['psnr_vs_fp32']:.1f} ({r['psnr_vs_fp32_min']:.1f}) dB" if "psnr_vs_fp32" in r else "-"])
        info[k].update(speeds[k])
        info[k]["vs_teacher"] = r["img_s"] / base
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if args.json:
        out = {"side": side, "threads": cpu_count(), "rounds": args.rounds, "seconds": args.seconds,
               "onnxruntime": ort.__version__, "torch": torch.__version__, "machine": platform.machine(),
               "images": len(x), "models": info}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"-> {args.json}")


if __name__ == "__main__":
    main()
