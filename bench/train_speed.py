"""Seconds per training iteration and peak memory of CycleGAN, pix2pix, CUT and FastCUT at the
reference sizes.

Each case runs in its own process (so peak memory is its own) through the real Trainer step:
discriminator update(s) then generator update, at batch 1 and 256x256 by default. The fp32 matmul
rate is measured in the same run, and the FLOPs of one iteration are counted with
torch.utils.flop_counter, so the achieved rate can be read as a fraction of the machine's peak.

    python bench/train_speed.py --json out.json      # all cases, CPU or CUDA (auto)
    python bench/train_speed.py --cases cyclegan cyclegan-reference --rounds 2
    python bench/train_speed.py --modes fp32 amp amp-compile --loader --json gpu.json   # on CUDA

``--modes`` runs each case as ``fp32`` (full precision, eager, NCHW), ``amp`` (autocast: bf16
where supported, else fp16 with a GradScaler; channels_last) and ``amp-compile`` (the same, with
``torch.compile``); the speed-up of each over fp32 comes from the same run. ``--loader`` feeds the
steps from the real data pipeline (JPEG files decoded, resized, cropped and flipped by the
loader's worker processes, pinned memory) instead of tensors already in memory, and reports the
share of the time the training step waited for its batch. Without ``--data DIR`` the files are
rendered once into a temporary folder (the embedded scenes, at the reference 286 px load size).

``cyclegan-reference`` re-enacts the reference implementation's iteration on the same networks
(bench/reference_cyclegan.py), so the speed-up and memory ratio come from one run.
``cut-reference`` and ``fastcut-reference`` run the reference CUT implementation from its own code
(taesungp/contrastive-unpaired-translation, a checkout given with ``--reference-cut DIR``;
bench/reference_cut.py), so CUT's ratios to it and to our CycleGAN come from one run too:

    python bench/train_speed.py --cases cyclegan cut fastcut cut-reference fastcut-reference \
        --reference-cut /tmp/cut-ref --json bench/results/train_speed_cut.json
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

MODES = {
    # name: (amp, channels_last, compile)
    "fp32": ("off", False, False),
    "amp": ("auto", True, False),
    "amp-compile": ("auto", True, True),
}

CASES = {
    # name: (model, generator, extra options)
    "cyclegan": ("cyclegan", "resnet_9blocks", {}),
    "pix2pix": ("pix2pix", "unet", {}),
    # the reference implementation's iteration on the same networks (bench/reference_cyclegan.py)
    "cyclegan-reference": ("cyclegan", "resnet_9blocks", {}),
    "cut": ("cut", "resnet_9blocks", {}),
    "fastcut": ("fastcut", "resnet_9blocks", {}),
    # the reference CUT implementation's own code (bench/reference_cut.py; needs --reference-cut DIR)
    "cut-reference": ("cut", "resnet_9blocks", {}),
    "fastcut-reference": ("fastcut", "resnet_9blocks", {}),
}
REFERENCE_CUT = {"cut-reference": "CUT", "fastcut-reference": "FastCUT"}
DEFAULT_CASES = ["cyclegan", "pix2pix", "cyclegan-reference", "cut", "fastcut"]
# same-run comparisons printed at the end: (case, against it)
COMPARISONS = [("cyclegan", "cyclegan-reference"), ("cut", "cyclegan"), ("fastcut", "cyclegan"),
               ("cut", "cut-reference"), ("fastcut", "fastcut-reference")]

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


def measure(step, iters: int, device, before_flop_count=None, warmup: int = 1, waited=None) -> dict:
    """Warm up, time ``iters`` calls of ``step`` (median), read peak memory, then count one step's
    FLOPs (after the timing, so the counter's own memory is not in the peak). ``waited()`` gives
    the seconds spent waiting for data so far (the loader), for the share of the timed span."""
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):  # allocator, cudnn/oneDNN kernel choice, torch.compile's graphs
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    times = []
    wait_before = waited() if waited else 0.0
    span = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    span = time.perf_counter() - span
    data_wait = (waited() - wait_before) / span if waited else None
    times.sort()
    sec = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if before_flop_count is not None:
        before_flop_count()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    return {"device": str(device), "sec_per_iter": sec, "it_per_s": 1 / sec, "sec_min": times[0],
            "sec_max": times[-1], "iters": iters, "data_wait_share": data_wait,
            "gflop_per_iter": flops / 1e9, "achieved_gflops": flops / sec / 1e9, "peak_mem_gb": peak / 1e9,
            "peak_mem_kind": "cuda allocated" if cuda else "process RSS", "torch_threads": torch.get_num_threads()}


def random_batches(batch: int, size: int):
    import torch

    g = torch.Generator().manual_seed(0)
    while True:
        yield {"A": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
               "B": torch.rand(batch, 3, size, size, generator=g) * 2 - 1}


def render_files(root: str, count: int, load: int) -> None:
    """The embedded scenes as JPEG files at the reference load size: ``unpaired/trainA``, ``trainB``
    for CycleGAN and side-by-side ``aligned/train`` pairs for pix2pix, decoded like real data."""
    import numpy as np
    from PIL import Image

    from translate.data.synthetic import render_pair

    for sub in ("unpaired/trainA", "unpaired/trainB", "aligned/train"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(count):
        a, b = render_pair(load, seed=0, index=i)
        Image.fromarray(a).save(os.path.join(root, "unpaired", "trainA", f"{i:04d}.jpg"), quality=90)
        Image.fromarray(b).save(os.path.join(root, "unpaired", "trainB", f"{i:04d}.jpg"), quality=90)
        Image.fromarray(np.concatenate([a, b], axis=1)).save(os.path.join(root, "aligned", "train", f"{i:04d}.jpg"),
                                                             quality=90)


class TimedBatches:
    """The loader's batches, with the seconds the training step spent waiting for each."""

    def __init__(self, batches) -> None:
        self.batches, self.waited = iter(batches), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        batch = next(self.batches)
        self.waited += time.perf_counter() - t
        return batch


def run_case(name: str, size: int, batch: int, iters: int, device: str, mode: str, winograd: bool,
             data: tuple[str, str] | None = None, workers: int = -1, reference_cut: str | None = None) -> dict:
    import torch

    from translate.data import TranslationDataset, detect_layout, make_loader
    from translate.engine.device import resolve_device
    from translate.engine.trainer import Trainer
    from translate.models import build_model
    from translate.nn import set_winograd
    from translate.train import build_config

    if name == "cyclegan-reference":
        return run_reference(size, batch, iters)
    if name in REFERENCE_CUT:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from reference_cut import measure_reference

        return measure_reference(reference_cut, REFERENCE_CUT[name], size, batch, iters, resolve_device(device).type,
                                 data[0] if data else None)
    amp, channels_last, compiled = MODES[mode]
    model_name, generator, extra = CASES[name]
    cfg = build_config({"model": model_name, "size": size, "batch_size": batch, "steps": 10_000, "device": device,
                        "amp": amp, "generator": generator, "channels_last": channels_last, "compile": compiled,
                        "workers": workers, **extra})
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build_model(cfg)
    if not winograd:
        set_winograd(model, False)
    trainer = Trainer(model, cfg, device=dev, total_steps=10_000,
                      loader_factory=lambda start: random_batches(batch, size), quiet=True)
    if data:
        from translate.models import family

        unpaired = family(model_name).data == "unpaired"
        folder = data[0] if unpaired else data[1]
        dataset = TranslationDataset(detect_layout(folder), size=size, load_size=None, flip=True, unpaired=unpaired)
        stream = TimedBatches(make_loader(dataset, batch_size=batch, seed=0, start=0, workers=cfg.train.workers,
                                          pin_memory=dev.type == "cuda"))
    else:
        stream = random_batches(batch, size)
    # FLOPs are counted as a direct convolution needs them (Winograd does fewer multiplications), so
    # the achieved rate is comparable with other implementations of the same networks.
    result = measure(lambda: trainer.train_step(stream), iters, dev,
                     before_flop_count=lambda: set_winograd(model, False), warmup=3 if compiled else 1,
                     waited=(lambda: stream.waited) if data else None)
    return {"case": name, "mode": mode, "size": size, "batch": batch, "amp": amp,
            "amp_dtype": str(trainer.dtype).replace("torch.", "") if trainer.dtype else "float32",
            "channels_last": channels_last, "compile": compiled, "loader": bool(data),
            "workers": cfg.train.workers if data else None, "winograd": winograd,
            "generator_params": sum(p.numel() for p in model.generators.parameters()), **result}


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
    return {"case": "cyclegan-reference", "mode": "fp32", "size": size, "batch": batch, "amp": "off",
            "amp_dtype": "float32", "channels_last": False, "compile": False, "loader": False, "winograd": False,
            "generator_params": sum(p.numel() for m in ref.modules()[:2] for p in m.parameters()),
            **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, choices=list(CASES))
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=None,
                    help="precision/compile modes per case [CUDA: all; CPU: fp32]")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the cases in alternation this many times (ratios from the same round)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--loader", action="store_true",
                    help="feed the steps from the data pipeline (JPEG files, worker processes) and report data waits")
    ap.add_argument("--data-unpaired", metavar="DIR", help="trainA/ trainB/ images for --loader (CycleGAN)")
    ap.add_argument("--data-aligned", metavar="DIR", help="side-by-side A|B images for --loader (pix2pix)")
    ap.add_argument("--workers", type=int, default=-1, help="loader processes [cores - 1, at most 8]")
    ap.add_argument("--no-winograd", action="store_true", help="direct 3x3 convolutions on the CPU too")
    ap.add_argument("--reference-cut", metavar="DIR",
                    help="a checkout of taesungp/contrastive-unpaired-translation, for the *cut-reference cases "
                         "[$CUT_REFERENCE]")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    ap.add_argument("--_mode", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._case:  # child process: one case, JSON on stdout
        data = (args.data_unpaired, args.data_aligned) if args.loader else None
        print(json.dumps(run_case(args._case, args.size, args.batch, args.iters, args.device, args._mode,
                                  not args.no_winograd, data, args.workers, args.reference_cut)))
        return
    if any(c in REFERENCE_CUT for c in args.cases):
        from reference_cut import reference_dir

        args.reference_cut = reference_dir(args.reference_cut)

    import tempfile

    import torch

    from translate.engine.device import resolve_device

    device = resolve_device(args.device).type
    modes = args.modes or (list(MODES) if device == "cuda" else ["fp32"])
    if device != "cpu" and "cyclegan-reference" in args.cases:
        args.cases.remove("cyclegan-reference")  # its figures (19.4 s, 4.2 GB) are CPU figures
    tmp = None
    if args.loader and not (args.data_unpaired and args.data_aligned):
        tmp = tempfile.TemporaryDirectory(prefix="train-speed-")
        render_files(tmp.name, count=64, load=round(args.size * 286 / 256))
        args.data_unpaired = args.data_unpaired or os.path.join(tmp.name, "unpaired")
        args.data_aligned = args.data_aligned or os.path.join(tmp.name, "aligned")
    gflops = matmul_gflops(device)
    results = []
    for rnd in range(args.rounds):
        for case in args.cases:
            for mode in (["fp32"] if case.endswith("-reference") else modes):
                cmd = [sys.executable, __file__, "--_case", case, "--_mode", mode, "--size", str(args.size),
                       "--batch", str(args.batch), "--iters", str(args.iters), "--device", args.device,
                       "--workers", str(args.workers)]
                if args.loader:
                    cmd += ["--loader", "--data-unpaired", args.data_unpaired, "--data-aligned", args.data_aligned]
                if args.no_winograd:
                    cmd.append("--no-winograd")
                if args.reference_cut:
                    cmd += ["--reference-cut", args.reference_cut]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    sys.exit(f"case {case} ({mode}) failed:\n{out.stderr[-3000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                result["round"] = rnd
                results.append(result)
    if tmp is not None:
        tmp.cleanup()
    gflops_after = matmul_gflops(device)
    peak = max(gflops, gflops_after)
    for r in results:
        r["matmul_gflops"] = peak
        r["fraction_of_matmul"] = r["achieved_gflops"] / peak
        base = [b for b in results if b["round"] == r["round"] and b["case"] == r["case"] and b["mode"] == "fp32"]
        r["speedup_vs_fp32"] = base[0]["sec_per_iter"] / r["sec_per_iter"] if base else None

    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    print(f"fp32 matmul: {gflops:.0f} GFLOP/s before, {gflops_after:.0f} after | torch {torch.__version__} | "
          f"{name} | {os.cpu_count()} CPUs")
    print(f"{'case':19} {'mode':>11} {'size':>5} {'batch':>5} {'dtype':>8} {'s/iter':>8} {'it/s':>7} "
          f"{'vs fp32':>7} {'GFLOP/s':>8} {'of matmul':>9} {'peak mem':>10} {'data wait':>9}")
    for r in results:
        wait = f"{r['data_wait_share']:.1%}" if r.get("data_wait_share") is not None else "-"
        speed = f"{r['speedup_vs_fp32']:.2f}x" if r.get("speedup_vs_fp32") else "-"
        print(f"{r['case']:19} {r['mode']:>11} {r['size']:>5} {r['batch']:>5} {r['amp_dtype']:>8} "
              f"{r['sec_per_iter']:>8.3f} {r['it_per_s']:>7.2f} {speed:>7} {r['achieved_gflops']:>8.1f} "
              f"{r['fraction_of_matmul']:>9.0%} {r['peak_mem_gb']:>8.2f}GB {wait:>9}")
    # same-run comparisons: CycleGAN with the reference's iteration on the same networks, CUT and
    # FastCUT with our CycleGAN and with the reference CUT's own code
    summary = {}
    for case, other in COMPARISONS:
        speed, mem = [], []
        for rnd in range(args.rounds):
            by = {r["case"]: r for r in results if r["round"] == rnd and r["mode"] == "fp32"}
            if case in by and other in by:
                speed.append(by[other]["sec_per_iter"] / by[case]["sec_per_iter"])
                mem.append(by[case]["peak_mem_gb"] / by[other]["peak_mem_gb"])
        if speed:
            print(f"{case} vs {other}, same run: {statistics.median(speed):.2f}x the iterations per second, "
                  f"{statistics.median(mem):.2f}x the peak memory (median of {len(speed)} round(s))")
            summary[f"{case}_vs_{other}"] = {"speed": statistics.median(speed), "memory": statistics.median(mem),
                                             "rounds": {"speed": speed, "memory": mem}}
    if "cyclegan_vs_cyclegan-reference" in summary:  # the names earlier runs' JSON used
        summary["speedup_vs_reference"] = summary["cyclegan_vs_cyclegan-reference"]["speed"]
        summary["memory_vs_reference"] = summary["cyclegan_vs_cyclegan-reference"]["memory"]
    targets = {}
    for case in args.cases:  # the targets: AMP + channels_last >= 2x fp32 eager, data waits < 5 %
        amp = [r["speedup_vs_fp32"] for r in results if r["case"] == case and r["mode"] == "amp"]
        waits = [r["data_wait_share"] for r in results if r["case"] == case and r.get("data_wait_share") is not None]
        if amp:
            targets[f"{case}_amp_speedup"] = statistics.median(amp)
            print(f"{case}: AMP + channels_last {statistics.median(amp):.2f}x fp32 eager (target >= 2x)")
        if waits:
            targets[f"{case}_max_data_wait"] = max(waits)
            print(f"{case}: waited for data {max(waits):.1%} of the time at most (target < 5 %)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": [gflops, gflops_after], "results": results, "comparison": summary,
                       "targets": targets, "command": " ".join(sys.argv)}, f, indent=2)


if __name__ == "__main__":
    main()
