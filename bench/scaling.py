"""Data-parallel scaling: one process with the global batch vs torchrun with N processes.

Each configuration trains the same model for ``--steps`` steps with ``translate train`` (the real
command, the real data pipeline), and the training rate is read from the run's ``metrics.jsonl``
(median of the logged ``it_per_s`` after the first row, which holds start-up). The global batch is
the same in every configuration, so steps/s compare directly; samples/s = steps/s x global batch.

    python bench/scaling.py --procs 1 2 --batch 4 --json out.json           # CPU: gloo
    python bench/scaling.py --procs 1 2 4 8 --batch 32 --device cuda --size 256 --model cyclegan

On the CPU each process gets cores / N threads, so the comparison shows the cost of splitting the
work and averaging the gradients (Gloo), not extra hardware; on N GPUs it shows the speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(procs: int, args, run_dir: Path) -> dict:
    per_rank = args.batch // procs
    opts = ["--model", args.model, "--size", str(args.size), "--steps", str(args.steps), "--batch-size",
            str(per_rank), "--device", args.device, "--run-dir", str(run_dir), "-q",
            "--set", "log_every=5", "--set", f"sample_every={10 * args.steps}",
            "--set", f"checkpoint_every={10 * args.steps}"]
    if args.data:
        opts += ["--data", args.data]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    if procs == 1:
        cmd = [sys.executable, "-m", "translate", "train", *opts]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "translate", "train", *opts]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rate = statistics.median(r["it_per_s"] for r in rows[1:]) if len(rows) > 1 else rows[0]["it_per_s"]
    return {"procs": procs, "batch_per_process": per_rank, "global_batch": per_rank * procs, "steps_per_s": rate,
            "samples_per_s": rate * per_rank * procs, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default="pix2pix", choices=["pix2pix", "cyclegan", "dcgan", "cgan"])
    ap.add_argument("--data", help="training data [the embedded set]")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4, help="global batch, split over the processes")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    for n in args.procs:
        if args.batch % n:
            sys.exit(f"--batch {args.batch} does not split over {n} processes")
    results = []
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        for n in args.procs:
            results.append(run(n, args, Path(tmp) / f"p{n}"))
    base = results[0]["steps_per_s"]
    print(f"{args.model} {args.size} px, global batch {args.batch}, {args.steps} steps, device {args.device}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'processes':>9} {'batch/proc':>10} {'steps/s':>8} {'samples/s':>9} {'vs first':>8} {'wall s':>7}")
    for r in results:
        r["speedup"] = r["steps_per_s"] / base
        print(f"{r['procs']:>9} {r['batch_per_process']:>10} {r['steps_per_s']:>8.2f} {r['samples_per_s']:>9.1f} "
              f"{r['speedup']:>7.2f}x {r['wall_s']:>7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
