"""``translate run --ray`` on a local one-machine Ray cluster against the local ``translate run``:
images/s of each on the same folder, measured in one run (alternating), their ratio, and the
start-up cost of the cluster reported on its own.

    python bench/ray_speed.py --images 64 --repeats 2 --json bench/results/ray_speed.json

The model is CycleGAN's default generator (ResNet-9, 11.4 M parameters; untrained weights unless
``--run`` names a training run: speed does not depend on them), exported to ONNX fp32, on 256x256
JPEGs (the facades photos from ../shared/datasets when present, else generated). Cases:

- ``local``: what ``translate run`` does: load the model (``Translator``), then ``run_jobs``
  (decode on a thread pool, batch, infer, encode, atomic write).
- ``ray``: what ``translate run --ray`` does once the cluster is up: ``run_on_ray`` (actor start
  and model load in the actor, decode tasks, the actor pool, write tasks).
- start-up: ``--ray local`` starting the cluster (``ray.init``) before the first job, on its own.

Both write every image of the folder anew each time (the output folder is emptied first). "first
output" is the time from the start to the first output file on disk; "steady" the rate after it.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_speed import images_folder, untrained_run  # noqa: E402 - the same images and model as bench/run_speed.py


class FirstOutput:
    """Watches a folder from a thread: when the first (non-temporary) file appears."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.at, self._stop = folder, None, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self.folder.is_dir() and any(not p.name.startswith(".") for p in self.folder.iterdir()):
                self.at = time.perf_counter()
                return
            time.sleep(0.01)

    def __enter__(self) -> "FirstOutput":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed(fn, out: Path, n: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    with FirstOutput(out) as first:
        t0 = time.perf_counter()
        summary = fn()
        t1 = time.perf_counter()
    assert summary.done == n and not summary.failed, summary
    t_first = (first.at or t1) - t0
    return {"s": t1 - t0, "img_s": n / (t1 - t0), "first_output_s": t_first,
            "steady_img_s": (n - 1) / max(t1 - t0 - t_first, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="training run whose generator to serve")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    import ray

    from translate.export import export_generator
    from translate.ray_run import connect, run_on_ray
    from translate.runtime import Translator, cpu_count, plan_jobs, run_jobs

    tmp = Path(tempfile.mkdtemp(prefix="ray-speed-"))
    results: dict[str, list[dict]] = {"local": [], "ray": []}
    try:
        run = args.run or untrained_run(tmp / "untrained-run", args.size)
        images_folder(tmp / "in", args.images, args.size)
        model = export_generator(run, out=tmp / "fp32.onnx", quiet=True).path
        jobs = {k: plan_jobs(tmp / "in", tmp / f"out-{k}") for k in results}
        print(f"model: {run} ResNet-9 fp32 | {args.images} JPEGs {args.size}x{args.size} | batch {args.batch_size} "
              f"| {cpu_count()} cores | ray {ray.__version__}", flush=True)

        t0 = time.perf_counter()
        cluster = connect("local")  # what --ray local (or auto with no cluster running) does first
        startup = time.perf_counter() - t0
        print(f"cluster start-up: {startup:.2f} s ({cluster.describe()})", flush=True)

        def local():
            t = Translator(model, batch_size=args.batch_size)
            return run_jobs(t, jobs["local"], progress=False)

        def on_ray():
            return run_on_ray(jobs["ray"], model, batch_size=args.batch_size, progress=False)

        for r in range(args.repeats):  # alternating, so both see the same machine
            for name, fn in (("local", local), ("ray", on_ray)):
                res = timed(fn, tmp / f"out-{name}", args.images)
                results[name].append(res)
                print(f"repeat {r + 1} {name}: {res['img_s']:.3f} img/s ({res['s']:.1f} s; first output "
                      f"{res['first_output_s']:.2f} s, then {res['steady_img_s']:.3f} img/s)", flush=True)
        ray.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: {m: statistics.median(r[m] for r in v) for m in ("img_s", "first_output_s", "steady_img_s")}
           for k, v in results.items()}
    ratio = med["ray"]["img_s"] / med["local"]["img_s"]
    steady = med["ray"]["steady_img_s"] / med["local"]["steady_img_s"]
    print(f"\n| case | img/s (median of {args.repeats}) | first output (s) | img/s after it | vs local |")
    print("|---|---|---|---|---|")
    for k, m in med.items():
        print(f"| {k} | {m['img_s']:.3f} | {m['first_output_s']:.2f} | {m['steady_img_s']:.3f} | "
              f"{m['img_s'] / med['local']['img_s']:.2f}x |")
    print(f"\nray / local: {ratio:.2f}x end to end ({steady:.2f}x after the first output; target >= 0.8x); "
          f"cluster start-up {startup:.2f} s, not included")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": cpu_count(),
                        "ray": ray.__version__},
            "args": {k: str(v) for k, v in vars(args).items()}, "cluster_startup_s": startup, "results": results,
            "median": med, "ratio": ratio, "ratio_after_first_output": steady}, indent=2))


if __name__ == "__main__":
    main()
