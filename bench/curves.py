"""Score against training minutes, from runs trained with ``--eval-every`` (their ``evals.jsonl``):
a table, a plot and JSON, for comparing families at equal wall-clock.

    python bench/curves.py checkpoints/q-facades-cyclegan checkpoints/q-facades-cut --direction BtoA \\
        --metric kid --png docs/images/facades-kid-minutes.png --json bench/results/curves.json

Each row of ``evals.jsonl`` holds the step, the minutes trained so far (``train_minutes``: the
time ``--eval-every`` spends scoring is not counted) and the scores per direction.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def read_curve(run: Path, direction: str, metric: str) -> list[dict]:
    rows = []
    for line in (run / "evals.jsonl").read_text().splitlines():
        row = json.loads(line)
        scores = row["results"].get(direction)
        if scores is None or metric not in scores:
            continue
        rows.append({"step": row["step"], "minutes": row.get("train_minutes"), metric: scores[metric]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--direction", default="BtoA", help="which translation's scores [BtoA]")
    ap.add_argument("--metric", default="kid")
    ap.add_argument("--png", help="also plot the curves here")
    ap.add_argument("--json", help="also write the curves here")
    args = ap.parse_args()
    curves = {}
    for run in args.runs:
        curves[run.name] = read_curve(run, args.direction, args.metric)
    print(f"{'run':32} {'step':>6} {'minutes':>8} {args.metric:>9}")
    for name, rows in curves.items():
        for r in rows:
            minutes = f"{r['minutes']:.2f}" if r["minutes"] is not None else "-"
            print(f"{name:32} {r['step']:>6} {minutes:>8} {r[args.metric]:>9.4f}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        for name, rows in curves.items():
            ax.plot([r["minutes"] for r in rows], [r[args.metric] for r in rows], marker="o", label=name)
        ax.set_xlabel("minutes of training (scoring not counted)")
        ax.set_ylabel(f"{args.metric.upper()} ({args.direction}, lower is better)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        fig.savefig(args.png)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        Path(args.json).write_text(json.dumps({"direction": args.direction, "metric": args.metric,
                                               "curves": curves}, indent=2) + "\n")


if __name__ == "__main__":
    main()
