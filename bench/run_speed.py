"""Images per second of ``translate run`` end to end, against the pure model compute rate and torch
eager of the same generator, measured in one run; int8 against fp32 (speed and PSNR).

    python bench/run_speed.py --run checkpoints/bench-facades-cyclegan --json out.json
    python bench/run_speed.py                       # an untrained ResNet-9 if no --run is given

Cases (ResNet-9 generator by default, 256x256 JPEGs from ../shared/datasets/facades_unpaired/trainA
or generated ones):

- ``torch eager``: the generator's forward in torch (no_grad, fp32), batch as given, on decoded
  tensors: what a training framework would serve with.
- ``ort fp32 compute``: onnxruntime session.run on pre-decoded batches: the ceiling for serving.
- ``translate run``: the whole CLI path (decode on a thread pool, batch, infer, encode, atomic
  write) over the folder, in-process, through the same function the CLI calls.
- ``ort int8 compute``: the QDQ int8 export (calibrated on other images of the same folder), and its
  PSNR against fp32 outputs on the benchmark images.
- start-up: a fresh ``translate run`` process on one image, minus that image's compute time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets" / "facades_unpaired" / "trainA"


def images_folder(dst: Path, n: int, size: int) -> list[Path]:
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    src = sorted(SHARED.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0) if SHARED.is_dir() else []
    out = []
    for i in range(n):
        if src:
            img = Image.open(src[-(i + 1)]).convert("RGB").resize((size, size), Image.BICUBIC)
        else:
            rng = np.random.default_rng(i)
            img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        p = dst / f"{i:04d}.jpg"
        img.save(p, quality=95)
        out.append(p)
    return out


def calibration_folder(dst: Path, n: int, size: int) -> Path:
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    src = sorted(SHARED.glob("*.jpg"))[:n] if SHARED.is_dir() else []
    for i in range(n):
        img = (Image.open(src[i]).convert("RGB") if src else
               Image.fromarray(np.random.default_rng(100 + i).integers(0, 255, (size, size, 3), dtype=np.uint8)))
        img.resize((size, size), Image.BICUBIC).save(dst / f"c{i:03d}.jpg", quality=95)
    return dst


def untrained_run(dst: Path, size: int) -> Path:
    """A run directory holding an untrained CycleGAN (ResNet-9) checkpoint, when no --run is given."""
    from translate.engine.checkpoint import save_checkpoint
    from translate.models import build_model
    from translate.run import Run
    from translate.train import build_config

    cfg = build_config({"model": "cyclegan", "size": size, "steps": 1})
    Run(dst).write_config(cfg)
    model = build_model(cfg)
    save_checkpoint(dst, 0, {k: v.contiguous() for k, v in model.state_dict().items()}, {"step": 0})
    return dst


def rate(fn, n_images: int, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(n_images / (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="training run whose generator to serve")
    ap.add_argument("--generator", default=None)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=16, help="calibration images for int8")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import torch

    from translate.export import export_generator, psnr
    from translate.run import load_generator
    from translate.nn.winograd import set_winograd
    from translate.images import to_float
    from translate.runtime import Translator, cpu_count, plan_jobs, run_jobs

    tmp = Path(tempfile.mkdtemp(prefix="run-speed-"))
    try:
        run = args.run or untrained_run(tmp / "untrained-run", args.size)
        files = images_folder(tmp / "in", args.images, args.size)
        fp32 = export_generator(run, generator=args.generator, out=tmp / "fp32.onnx", quiet=True)
        g = load_generator(run, args.generator)
        print(f"model: {run} {g.name} step {g.step} | {args.images} images {args.size}x{args.size} | batch "
              f"{args.batch_size} | {cpu_count()} cores | torch {torch.__version__}", flush=True)

        from translate.runtime import decode

        decoded = [to_float(decode(p)) for p in files]
        batches = [np.stack(decoded[i: i + args.batch_size]) for i in range(0, len(decoded), args.batch_size)]
        results: dict[str, dict] = {}

        # torch eager (translate's own layers: Winograd on the CPU where it pays), and plain conv
        torch.set_num_threads(cpu_count())
        for label, wino in (("torch eager", True), ("torch eager, plain conv", False)):
            set_winograd(g.net, wino)
            tb = [torch.from_numpy(b) for b in batches]

            def torch_all():
                with torch.no_grad():
                    for b in tb:
                        g.net(b)
            results[label] = {"img_s": rate(torch_all, len(files), args.repeats)}
            print(f"{label}: {statistics.median(results[label]['img_s']):.3f} img/s", flush=True)
        set_winograd(g.net, True)

        t = Translator(fp32.path, batch_size=args.batch_size, tile=0)

        def ort_all(tr=t):
            for b in batches:
                tr.infer(b, np.zeros(b.shape[0], dtype=np.int64))
        results["ort fp32 compute"] = {"img_s": rate(ort_all, len(files), args.repeats)}
        print(f"ort fp32 compute: {statistics.median(results['ort fp32 compute']['img_s']):.3f} img/s", flush=True)

        jobs = plan_jobs(tmp / "in", tmp / "out")

        def e2e():
            shutil.rmtree(tmp / "out", ignore_errors=True)
            s = run_jobs(t, jobs, progress=False)
            assert s.done == len(files) and not s.failed, s
        results["translate run"] = {"img_s": rate(e2e, len(files), args.repeats)}
        print(f"translate run: {statistics.median(results['translate run']['img_s']):.3f} img/s", flush=True)

        # start-up of a fresh process: one image, minus its compute
        one = tmp / "one"
        one.mkdir()
        shutil.copy(files[0], one / "a.jpg")
        starts = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "translate", "-q", "run", str(one), str(tmp / f"o{i}"), "--model",
                            str(fp32.path)], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            starts.append(time.perf_counter() - t0)
        compute1 = 1.0 / statistics.median(results["ort fp32 compute"]["img_s"])
        results["cli one image"] = {"s": starts, "startup_s": [s - compute1 for s in starts]}
        med_start = statistics.median(starts)
        print(f"cli, one image: {med_start:.2f} s, start-up {med_start - compute1:.2f} s", flush=True)

        if not args.no_int8:
            calib = calibration_folder(tmp / "calib", args.calibration, args.size)
            q = export_generator(run, generator=args.generator, out=tmp / "int8.onnx", int8=True, calibration=calib,
                                 quiet=True)
            t8 = Translator(q.path, batch_size=args.batch_size, tile=0)
            results["ort int8 compute"] = {"img_s": rate(lambda: ort_all(t8), len(files), args.repeats)}
            ps = [psnr(t.infer(b, np.zeros(b.shape[0], np.int64)), t8.infer(b, np.zeros(b.shape[0], np.int64)))
                  for b in batches]
            results["ort int8 compute"]["psnr_db"] = {"mean": float(np.mean(ps)), "min": float(np.min(ps))}
            print(f"ort int8 compute: {statistics.median(results['ort int8 compute']['img_s']):.3f} img/s, PSNR "
                  f"{np.mean(ps):.1f} dB (min {np.min(ps):.1f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v["img_s"]) for k, v in results.items() if "img_s" in v}
    compute = med["ort fp32 compute"]
    print(f"\n| case | img/s (median of {args.repeats}) | vs ort fp32 compute | vs torch eager |")
    print("|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} | {v / compute:.2f}x | {v / med['torch eager']:.2f}x |")
    if "ort int8 compute" in results:
        p = results["ort int8 compute"]["psnr_db"]
        print(f"\nint8 vs fp32: {med['ort int8 compute'] / compute:.2f}x the speed, PSNR {p['mean']:.1f} dB "
              f"(min {p['min']:.1f}) on the benchmark images")
    print(f"translate run end to end: {med['translate run'] / compute:.1%} of the pure compute rate")
    st = results["cli one image"]["startup_s"]
    print(f"CLI start-up to the first image: {statistics.median(st):.2f} s (median of {len(st)})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": cpu_count(),
                        "torch": torch.__version__},
            "args": {k: str(v) for k, v in vars(args).items()}, "results": results, "median_img_s": med}, indent=2))


if __name__ == "__main__":
    main()
