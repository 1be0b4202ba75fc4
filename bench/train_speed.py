"""Seconds per training iteration and peak memory of CycleGAN and pix2pix at the reference sizes.

Each case runs in its own process (so peak memory is its own) through the real Trainer step:
discriminator update(s) then generator update, at batch 1 and 256x256 by default. The fp32 matmul
rate is measured in the same run, and the FLOPs of one iteration are counted with
torch.utils.flop_counter, so the achieved rate can be read as a fraction of the machine's peak.

    python bench/train_speed.py --json out.json      # all cases, CPU or CUDA (auto)
    python bench/train_speed.py --cases cyclegan cyclegan-reference --rounds 2

``cyclegan-reference`` re-enacts the reference implementation's iteration on the same networks
(bench/reference_cyclegan.py), so the speed-up and memory ratio come from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    # name: (model, generator, extra options)
    "cyclegan": ("cyclegan", "resnet_9blocks", {}),
    "pix2pix": ("pix2pix", "unet", {}),
    # the reference implementation's iteration on the same networks (bench/reference_cyclegan.py)
    "cyclegan-reference": ("cyclegan", "resnet_9blocks", {}),
}

def matmul_gflops(device: str, n: int = 2048, repeats: int = 10) -> float:
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def measure(step, iters: int, device, before_flop_count=None) -> dict:
    """Warm up, time ``iters`` calls of ``step`` (median), read peak memory, then count one step's
    FLOPs (after the timing, so the counter's own memory is not in the peak)."""
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    step()  # warm-up (allocator, cudnn/oneDNN kernel choice)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    sec = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if before_flop_count is not None:
        before_flop_count()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    return {"device": str(device), "sec_per_iter": sec, "sec_min": times[0], "sec_max": times[-1], "iters": iters,
            "gflop_per_iter": flops / 1e9, "achieved_gflops": flops / sec / 1e9, "peak_mem_gb": peak / 1e9,
            "peak_mem_kind": "cuda allocated" if cuda else "process RSS", "torch_threads": torch.get_num_threads()}


def random_batches(batch: int, size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    while True:
        yield {"A": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
               "B": torch.rand(batch, 3, size, size, generator=g) * 2 - 1}


def run_case(name: str, size: int, batch: int, iters: int, device: str, amp: str, channels_last: bool,
             winograd: bool) -> dict:
    import torch

    from translate.engine.device import resolve_device
    from translate.engine.trainer import Trainer
    from translate.models import build_model
    from translate.nn import set_winograd
    from translate.train import build_config

    if name == "cyclegan-reference":
        return run_reference(size, batch, iters)
    model_name, generator, extra = CASES[name]
    cfg = build_config({"model": model_name, "size": size, "batch_size": batch, "steps": 10_000, "device": device,
                        "amp": amp, "generator": generator, **extra})
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(cfg)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not winograd:
        set_winograd(model, False)
    trainer = Trainer(model, cfg, run_dir="/nonexistent", device=dev, total_steps=10_000,
                      loader_factory=lambda start: random_batches(batch, size), quiet=True)
    stream = random_batches(batch, size)
    # FLOPs are counted as a direct convolution needs them (Winograd does fewer multiplications), so
    # the achieved rate is comparable with other implementations of the same networks.
    result = measure(lambda: trainer.train_step(stream), iters, dev,
                     before_flop_count=lambda: set_winograd(model, False))
    return {"case": name, "size": size, "batch": batch, "amp": amp, "channels_last": channels_last,
            "winograd": winograd, "generator_params": sum(p.numel() for p in model.generators.parameters()),
            **result}


def run_reference(size: int, batch: int, iters: int) -> dict:
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from reference_cyclegan import ReferenceCycleGAN

    torch.manual_seed(0)
    ref = ReferenceCycleGAN()
    stream = random_batches(batch, size)

    def step():
        b = next(stream)
        ref.optimize_parameters(b["A"], b["B"])

    result = measure(step, iters, torch.device("cpu"))
    return {"case": "cyclegan-reference", "size": size, "batch": batch, "amp": "off", "channels_last": False,
            "winograd": False, "generator_params": sum(p.numel() for m in ref.modules()[:2] for p in m.parameters()),
            **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the cases in alternation this many times (ratios from the same round)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-winograd", action="store_true", help="direct 3x3 convolutions on the CPU too")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._case:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args._case, args.size, args.batch, args.iters, args.device, args.amp,
                                  args.channels_last, not args.no_winograd)))
        return

    import torch

    from translate.engine.device import resolve_device

    device = resolve_device(args.device).type
    if device != "cpu" and "cyclegan-reference" in args.cases:
        args.cases.remove("cyclegan-reference")  # its figures (19.4 s, 4.2 GB) are CPU figures
    gflops = matmul_gflops(device)
    results = []
    for rnd in range(args.rounds):
        for case in args.cases:
            cmd = [sys.executable, __file__, "--_case", case, "--size", str(args.size), "--batch", str(args.batch),
                   "--iters", str(args.iters), "--device", args.device, "--amp", args.amp]
            if args.channels_last:
                cmd.append("--channels-last")
            if args.no_winograd:
                cmd.append("--no-winograd")
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"case {case} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["round"] = rnd
            results.append(result)
    gflops_after = matmul_gflops(device)
    peak = max(gflops, gflops_after)
    for r in results:
        r["matmul_gflops"] = peak
        r["fraction_of_matmul"] = r["achieved_gflops"] / peak

    header = f"{'case':19} {'size':>5} {'batch':>5} {'device':>7} {'winograd':>8} {'s/iter':>8} {'GFLOP/it':>9} " \
             f"{'GFLOP/s':>8} {'of matmul':>9} {'peak mem':>10}"
    print(f"fp32 matmul: {gflops:.0f} GFLOP/s before, {gflops_after:.0f} after | torch {torch.__version__} | "
          f"{platform.processor() or platform.machine()} | {os.cpu_count()} CPUs")
    print(header)
    for r in results:
        print(f"{r['case']:19} {r['size']:>5} {r['batch']:>5} {r['device']:>7} {str(r['winograd']):>8} "
              f"{r['sec_per_iter']:>8.2f} {r['gflop_per_iter']:>9.0f} {r['achieved_gflops']:>8.1f} "
              f"{r['fraction_of_matmul']:>9.0%} {r['peak_mem_gb']:>8.2f}GB")
    # same-run comparison with the reference's iteration on the same networks
    summary = {}
    for rnd in range(args.rounds):
        by = {r["case"]: r for r in results if r["round"] == rnd}
        if "cyclegan" in by and "cyclegan-reference" in by:
            ours, ref = by["cyclegan"], by["cyclegan-reference"]
            summary.setdefault("speedup", []).append(ref["sec_per_iter"] / ours["sec_per_iter"])
            summary.setdefault("memory", []).append(ours["peak_mem_gb"] / ref["peak_mem_gb"])
    if summary:
        speed, mem = statistics.median(summary["speedup"]), statistics.median(summary["memory"])
        print(f"CycleGAN vs the reference's iteration, same networks, same run: {speed:.2f}x the speed, "
              f"{mem:.2f}x the peak memory (median of {len(summary['speedup'])} round(s))")
        summary = {"speedup_vs_reference": speed, "memory_vs_reference": mem, "rounds": summary}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": [gflops, gflops_after], "results": results, "comparison": summary,
                       "command": " ".join(sys.argv)}, f, indent=2)


if __name__ == "__main__":
    main()
