"""Choosing ``learning.catch_up_s``: learnd on every stream of bench/quality.py, fed live and
fed as a full backlog the way the daemon catches up (bench/_backlog.py), for each value tried.

    nice .venv/bin/python bench/catch_up.py                      # 50k events, 3, 10, 30, 100 s
    nice .venv/bin/python bench/catch_up.py --events 20000 --values 10,30

Printed: per stream, prequential accuracy live and behind for each value (and events/s while
behind), then the mean over streams: the default is the value whose mean accuracy behind is
closest to live at a catch-up rate that still clears a backlog.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _streams import streams  # noqa: E402
from quality import run_learnd_recorded  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--values", default="3,10,30,100", help="catch_up_s values, comma-separated")
    ap.add_argument("--streams", default="", help="names' prefixes, comma-separated")
    args = ap.parse_args()
    torch.set_num_threads(1)
    values = [float(v) for v in args.values.split(",")]
    only = tuple(s for s in args.streams.split(",") if s)
    print(f"torch {torch.__version__}, 1 thread; {args.events:,} events per synthetic stream\n")
    head = " | ".join(f"behind, catch_up_s {v:g}" for v in values)
    print(f"| stream | live | {head} |")
    print("|---|---|" + "---|" * len(values))
    live_acc, behind_acc = [], {v: [] for v in values}
    for name, X, y, labels, _switches in streams(args.events, False, only):
        _, correct, _ = run_learnd_recorded(X, y, labels)
        live_acc.append(correct.mean())
        cells = []
        for v in values:
            dt, behind, _ = run_learnd_recorded(
                X, y, labels, behind=True, learning={"catch_up_s": v}
            )
            behind_acc[v].append(behind.mean())
            cells.append(f"{behind.mean():.3f} / {len(y) / dt / 1000:.1f}k/s")
        print(f"| {name} | {correct.mean():.3f} | " + " | ".join(cells) + " |", flush=True)
    means = " | ".join(f"{np.mean(behind_acc[v]):.3f}" for v in values)
    print(f"| **mean** | {np.mean(live_acc):.3f} | {means} |")


if __name__ == "__main__":
    main()
