"""Training steps per second of the noise-to-image families (dcgan, cgan) at 28 and 64 px.

Each step is the real Trainer step (a discriminator update on a real batch and the previous
generator step's fakes, then a generator update), at batch 64 on random data of the right shape, so
the figure is the networks' and the engine's, not the disk's. Default networks (ngf = ndf = 64,
batch norm, non-saturating loss); one channel at 28 px (MNIST), three at 64 px.

    python bench/gan_speed.py                       # all four cases on the current device
    python bench/gan_speed.py --json out.json --steps 30
    python bench/gan_speed.py --recipe stable       # with the stabilisers of --recipe stable
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

CASES = [("dcgan", 28, 1), ("cgan", 28, 1), ("dcgan", 64, 3), ("cgan", 64, 3)]


def run_case(model: str, size: int, channels: int, *, batch: int, steps: int, warmup: int, device: str,
             recipe: str | None) -> dict:
    import torch

    from translate.config import RunConfig, TrainConfig
    from translate.engine.device import resolve_device
    from translate.engine.trainer import Trainer
    from translate.models import build_model, family

    fam = family(model)
    extra = dict(fam.recipes[recipe]) if recipe else {}
    train_kw = {k: v for k, v in extra.items() if k in TrainConfig.__dataclass_fields__}
    model_kw = {k: v for k, v in extra.items() if k not in train_kw}
    t = TrainConfig(model=model, size=size, batch_size=batch, steps=warmup + steps, device=device, **train_kw)
    m = fam.config_class(channels=channels, **model_kw)
    if fam.conditional:
        m.n_classes = 10
    cfg = RunConfig(train=t, model=m)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(batch, channels, size, size, generator=gen) * 2 - 1,
                "label": torch.randint(0, 10, (batch,), generator=gen)} for _ in range(4)]

    def stream(start: int):
        i = 0
        while True:
            yield batches[i % len(batches)]
            i += 1

    trainer = Trainer(build_model(cfg), cfg, device=dev, total_steps=warmup + steps,
                      loader_factory=stream, quiet=True)
    it = iter(stream(0))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        trainer.train_step(it)
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        trainer.train_step(it)
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    params = {n: sum(p.numel() for p in net.parameters()) for n, net in
              {**trainer.model.generators, **trainer.model.discriminators}.items()}
    return {"model": model, "size": size, "channels": channels, "batch": batch, "steps_per_s": 1.0 / med,
            "images_per_s": batch / med, "median_s": med, "params": params, "device": str(dev),
            "recipe": recipe or "default"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per case (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--recipe", choices=["stable"], default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    import torch

    rows = [run_case(m, s, c, batch=args.batch, steps=args.steps, warmup=args.warmup, device=args.device,
                     recipe=args.recipe) for m, s, c in CASES]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {rows[0]['device']}, batch {args.batch}, "
          f"recipe {args.recipe or 'default'}")
    print(f"{'model':<6} {'size':>5} {'steps/s':>8} {'images/s':>9} {'G params':>10} {'D params':>10}")
    for r in rows:
        print(f"{r['model']:<6} {r['size']:>5} {r['steps_per_s']:>8.2f} {r['images_per_s']:>9.0f} "
              f"{r['params']['G']:>10,} {r['params']['D']:>10,}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "torch": torch.__version__, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
