"""Samples per second of the training data pipeline: decode, resize, random crop, flip, to tensor.

JPEG files of the embedded scenes are rendered at two sizes: the facades size (256 px squares, pairs
side by side) and the maps / cityscapes size (1024 px squares, pairs side by side, resized to the
286 px load size for training). Each is read through ``TranslationDataset`` in one process,
with and without decoding large JPEGs at a reduced scale (``images.load_rgb(at_least=...)``);
several loader workers multiply the single-process rate by about the number of cores they get.

    python bench/loader_speed.py --json out.json

Compare with the training step rate (``bench/train_speed.py``): a worker pool whose rate passes
the step rate x the batch size keeps the GPU fed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def render(root: Path, side: int, count: int) -> Path:
    import numpy as np
    from PIL import Image

    from translate.data.synthetic import render_pair

    folder = root / f"aligned{side}" / "train"
    folder.mkdir(parents=True)
    for i in range(count):
        a, b = render_pair(side, seed=0, index=i)
        Image.fromarray(np.concatenate([a, b], axis=1)).save(folder / f"{i:04d}.jpg", quality=90)
    return folder.parent


def rate(root: Path, size: int, reduced: bool, samples: int) -> float:
    from translate.data import TranslationDataset, detect_layout

    ds = TranslationDataset(detect_layout(root), size=size, load_size=None)
    if not reduced:
        ds.at_least = None
    ds[(0, 0)]  # warm-up
    started = time.perf_counter()
    for i in range(samples):
        ds[(i % len(ds), i)]
    return samples / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="training crop")
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--json")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="loader-speed-") as tmp:
        for side in (256, 1024):
            root = render(Path(tmp), side, 20)
            for reduced in (False, True):
                r = rate(root, args.size, reduced, args.samples)
                results.append({"source_side": side, "reduced_scale_decode": reduced, "samples_per_s": r})
    print(f"training pipeline, {args.size} px crops from pairs of the given side, one process, "
          f"{os.cpu_count()} CPUs")
    print(f"{'source':>8} {'reduced-scale decode':>21} {'samples/s':>10}")
    for r in results:
        print(f"{r['source_side']:>8} {str(r['reduced_scale_decode']):>21} {r['samples_per_s']:>10.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
