"""Side-by-side translations of the same held-out images by several runs: one row per run, with
the inputs above and the ground truth below (``translate eval``'s gallery, for several runs).

    python bench/gallery.py checkpoints/q-facades-pix2pix=pix2pix checkpoints/q-facades-pix2pix-hd=hd \\
        --direction BtoA --n 6 --out docs/images/facades-pix2pix-hd.jpg

Each run is ``RUN_DIR`` or ``RUN_DIR=LABEL``; its latest checkpoint (EMA weights when kept) is used,
on the run's ``val`` split (``--holdout``), in the direction given (the run must translate it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="RUN_DIR or RUN_DIR=LABEL")
    ap.add_argument("--direction", default="BtoA")
    ap.add_argument("--n", type=int, default=6, help="held-out images (the first by name)")
    ap.add_argument("--out", required=True, help=".png or .jpg")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch
    from PIL import Image

    from translate.evaluate import build_scorer
    from translate.report import save_grid
    from translate.run import open_checkpoint

    rows, target = {}, None
    for spec in args.runs:
        path, _, label = spec.partition("=")
        ckpt = open_checkpoint(path)
        generators = {name: g.net for name, g in ckpt.generators().items()}
        scorer, _ = build_scorer(ckpt.config, split="val", direction=args.direction, limit=args.n, fid=False,
                                 checkpoint=ckpt)
        gallery = scorer.gallery(generators, args.n)
        if not rows:
            rows["input"] = next(v for k, v in gallery.items() if k.startswith("input"))
        rows[label or Path(path).name] = gallery[args.direction]
        target = next((v for k, v in gallery.items() if k.startswith("target")), target)
    if target is not None:
        rows["ground truth"] = target
    tensors = {k: torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1 for k, v in rows.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        png = save_grid(tensors, Path(tmp) / "grid.png")
        Image.open(png).convert("RGB").save(out, quality=88) if out.suffix.lower() in (".jpg", ".jpeg") else \
            Image.open(png).save(out)
    print(f"wrote {out}: rows {', '.join(rows)}")


if __name__ == "__main__":
    main()
