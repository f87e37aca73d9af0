"""The linear member against its two halves: learnd with the MLP alone, the linear model alone
(``model.kind: linear``) and both with the selection (the default), on the wide suite, keeping
up and behind the log, with the same pipeline as bench/quality.py.

    .venv/bin/python bench/members.py --events 5000            # the wide suite, quick
    .venv/bin/python bench/members.py --events 5000 --suite seven
    .venv/bin/python bench/members.py --cost                   # learning speed, alone and both

Also printed, for classification keeping up: ``mix``, what a Hedge mixture of the two members'
probabilities (weights ``exp(-loss)``, each member's log loss summed with a half-life of
``half_life_events``) would have scored on the same run's member outputs, computed after the
run (nothing serves it): how much a mixture would add over serving one member.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from _backlog import learn_backlog  # noqa: E402
from _progress import bar, say  # noqa: E402
from _wide_streams import suite  # noqa: E402
from quality import _learnd  # noqa: E402

VARIANTS = {
    "MLP": ({"linear_member": {"enabled": False}}, None),
    "linear": (None, {"kind": "linear"}),
    "combined": (None, None),
}


def _run(s, learning, model, behind):
    """(seconds, per-event errors, member outputs (mlp, linear) per batch or None, switches)."""
    cfg, pipe, yy, errors = _learnd(s.X, s.y, s.labels, 0, learning, None, model)
    lrn = pipe.learner
    seen: dict[str, list[np.ndarray]] = {"mlp": [], "linear": []}
    if lrn.member is not None:
        own, member = lrn._learn_many, lrn.member.learn_many

        def own_rec(X, y):
            r = own(X, y)
            seen["mlp"].append(r.outputs)
            return r

        def member_rec(X, y):
            r = member(X, y)
            seen["linear"].append(r.outputs)
            return r

        lrn._learn_many = own_rec  # type: ignore[method-assign]
        lrn.member.learn_many = member_rec  # type: ignore[method-assign]
    if behind:
        dt, _ = learn_backlog(pipe, s.X, yy)
    else:
        b = cfg.learning.batch_size
        t0 = time.perf_counter()
        for i in range(0, len(yy), b):
            pipe.learn_arrays(s.X[i : i + b], yy[i : i + b])
        dt = time.perf_counter() - t0
    outs = seen if lrn.member is not None else None
    return dt, np.concatenate(errors), outs, lrn.selection.switches


def hedge(outs, y, half_life):
    """Accuracy of the Hedge mixture of the members' per-batch probabilities."""
    decay = 0.5 ** (1.0 / half_life)
    loss = np.zeros(2)
    correct, start = 0, 0
    for pm, pl in zip(outs["mlp"], outs["linear"], strict=True):
        yb = y[start : start + len(pm)].astype(np.int64)
        start += len(pm)
        w = np.exp(-(loss - loss.min()))
        w /= w.sum()
        mix = w[0] * pm + w[1] * pl
        correct += int((mix.argmax(1) == yb).sum())
        rows = np.arange(len(yb))
        ll = -np.log(np.clip(np.stack([pm[rows, yb], pl[rows, yb]]), 1e-7, 1)).sum(1)
        loss = loss * decay ** len(yb) + ll
    return correct / start


def cost(repeats: int = 4) -> None:
    """In-process learning speed, MLP alone against both members, alternating runs."""
    import torch

    from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
    from learnd.daemon.learning.learner import Learner

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3200, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    schema = SchemaConfig(task="binary", n_features=8)
    ways = {"MLP alone": {"linear_member": {"enabled": False}}, "both": {}}
    rates: dict[tuple[str, bool], list[float]] = {}
    for _ in range(repeats):
        for name, learning in ways.items():
            for rehearse in (False, True):
                lrn = Learner(schema, ModelConfig(), LearningConfig(**learning), "cpu")
                t0 = time.perf_counter()
                for i in range(0, len(y), 32):
                    lrn.learn_many(X[i : i + 32], y[i : i + 32])
                    if rehearse:
                        lrn.replay()
                rates.setdefault((name, rehearse), []).append(len(y) / (time.perf_counter() - t0))
    print("| rehearsal | MLP alone, events/s | both, events/s | both / alone |")
    print("|---|---|---|---|")
    for rehearse in (False, True):
        a, b = (float(np.median(rates[(n, rehearse)])) for n in ways)
        print(
            f"| {'after every batch' if rehearse else 'none'} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--suite", choices=("seven", "new", "all"), default="all")
    ap.add_argument("--streams", default="", help="only the streams whose names start so")
    ap.add_argument("--margin", type=float, help="learning.linear_member.margin for both")
    ap.add_argument("--half-life", type=int, help="learning.linear_member.half_life_events")
    ap.add_argument("--cost", action="store_true", help="only the learning speed, alone/both")
    args = ap.parse_args()
    if args.cost:
        cost()
        return
    lm = {"margin": args.margin, "half_life_events": args.half_life}
    lm = {k: v for k, v in lm.items() if v is not None}
    if lm:
        VARIANTS["combined"] = ({"linear_member": lm}, None)
    data = suite(args.suite, args.events, True, tuple(x for x in args.streams.split(",") if x))
    print(
        f"members ({args.suite} suite, synthetic streams {args.events:,} events, real data sets"
        " whole, seed 7, model seed 0, 1 torch thread): accuracy (regression: MAE) / examples/s;"
        " switches: times the served member changed\n"
    )
    cols = [f"{v}, {m}" for m in ("up", "behind") for v in VARIANTS]
    print("| stream | " + " | ".join(cols) + " | mix, up | switches up, behind |")
    print("|---|" + "---|" * (len(cols) + 2))
    progress = bar(len(data), "streams")
    for s in data:
        progress.set_postfix_str(s.name[:20])
        cells, mix, switches = [], "-", []
        for behind in (False, True):
            for name, (learning, model) in VARIANTS.items():
                dt, errors, outs, sw = _run(s, learning, model, behind)
                reg = s.task == "regression"
                score = float(np.nanmean(errors)) if reg else float((errors == 0).mean())
                cells.append(f"{score:.4f} / {len(s.y) / dt / 1000:.1f}k")
                if name == "combined":
                    switches.append(str(sw))
                    if outs is not None and not behind and not reg:
                        mix = f"{hedge(outs, s.y, 500):.4f}"
        say(
            f"| {s.name} ({len(s.y):,}) | "
            + " | ".join(cells)
            + f" | {mix} | {', '.join(switches)} |"
        )
        progress.update()
    progress.close()


if __name__ == "__main__":
    main()
