"""bench/quality.py --suite: every system on every stream of the wide suite
(bench/_wide_streams.py) in one run, classification and regression.

learnd runs its default config through ``Pipeline`` both keeping up (``learn_arrays``, each
batch followed by rehearsal) and behind the log (bench/_backlog.py: ``Pipeline.process`` fed
from a full backlog, as the daemon catches up). The anchors (bench/_anchors.py): river's three,
VW, and CapyMOA's three, each with its examples/s. The target: learnd within 0.5 points of the
best other system's accuracy, or within 5% of its MAE, both ways.
"""

from __future__ import annotations

import numpy as np
from _anchors import (
    CAPYMOA,
    river_regressors,
    river_systems,
    run_capymoa,
    run_river,
    run_river_regression,
    run_vw,
)
from _progress import bar, say
from _wide_streams import suite

LEARND = ("learnd, keeping up", "learnd, behind")
RIVER = ("river LR", "river HATC", "river ARF")
HEADER = [*LEARND, *RIVER, "VW", *CAPYMOA]
SLOW = {"river ARF"}  # --quick: only on streams <= 10,000 (CapyMOA runs on every stream)


def met(task: str, score: float, best: float) -> bool:
    """Whether ``score`` meets the target against the best other system's ``best``."""
    return score <= best * 1.05 if task == "regression" else score >= best - 0.005


def gap(task: str, score: float, best: float) -> str:
    """learnd against the best other: points of accuracy, or MAE as a share of the best's."""
    if task == "regression":
        return f"{score / best - 1:+.1%}"
    return f"{100 * (score - best):+.2f} pt"


def _others(s, quick):
    """The anchors on stream ``s``: ``(name, seconds, per-event score)``, None: not run."""
    regression = s.labels is None
    k = None if regression else len(s.labels)
    slow = quick and len(s.y) > 10_000
    out = []
    for name, model in river_regressors() if regression else river_systems(k):
        if slow and name in SLOW:
            out.append((name, None, "skipped (--quick)"))
            continue
        run = run_river_regression if regression else run_river
        dt, score = run(model, s.X, s.y)
        out.append((name, dt, score))
    vw = run_vw(s.X, s.y, k)
    out.append(("VW", *(vw if vw is not None else (None, "not installed"))))
    capy = run_capymoa(s.X, s.y, s.labels)
    for name in CAPYMOA:
        found = [r for r in capy or () if r[0] == name]
        out.append(found[0] if found else (name, None, "not installed"))
    return out


def compare_wide(which, n, quick, only, run_learnd_errors, alarm_delays) -> None:
    data = suite(which, n, quick, only)
    print(
        f"wide suite ({which}): synthetic streams {n:,} events, real data sets whole, seed 7,"
        " 1 torch thread; accuracy (regression: MAE) / examples/s\n"
    )
    print("| stream | " + " | ".join(HEADER) + " | best other | gap up, behind | met up, behind |")
    print("|---|" + "---|" * (len(HEADER) + 3))
    progress = bar(len(data), "streams")
    drift, missed = [], []
    for s in data:
        progress.set_postfix_str(s.name[:20])
        scores, cells = {}, []
        for behind, head in zip((False, True), LEARND, strict=True):
            dt, errors, alarms = run_learnd_errors(s.X, s.y, s.labels, behind=behind)
            scores[head] = _score(s.task, errors if s.task == "regression" else errors == 0)
            cells.append(_cell(scores[head], len(s.y), dt))
            if s.switches:
                drift.append((s.name, head, s.switches, *alarm_delays(alarms, s.switches)))
        for name, dt, score in _others(s, quick):
            if isinstance(score, str):
                cells.append(score)
                continue
            scores[name] = _score(s.task, score)
            cells.append(_cell(scores[name], len(s.y), dt))
        others = {k: v for k, v in scores.items() if k not in LEARND}
        pick = min if s.task == "regression" else max
        best = pick(others, key=others.__getitem__)
        b = others[best]
        gaps = ", ".join(gap(s.task, scores[h], b) for h in LEARND)
        oks = [met(s.task, scores[h], b) for h in LEARND]
        if not all(oks):
            missed.append(f"{s.name}: {gaps} against {best}")
        say(
            f"| {s.name} ({len(s.y):,}, {s.task}) | " + " | ".join(cells) + f" | {best}: {b:.4g}"
            f" | {gaps} | {', '.join('yes' if ok else 'no' for ok in oks)} |"
        )
        progress.update()
    progress.close()
    print("\nlearnd's drift alarms (events after each known switch; '-': none within 5,000)\n")
    print("| stream | learnd | switches at | alarm delay | false alarms |")
    print("|---|---|---|---|---|")
    for name, head, switches, delays, false in drift:
        sw = ", ".join(f"{x:,}" for x in switches)
        dl = ", ".join("-" if d is None else f"{d:,}" for d in delays)
        print(f"| {name} | {head.split(', ')[1]} | {sw} | {dl} | {false} |")
    print(f"\nmissing the target on {len(missed)} of {len(data)} streams")
    for line in missed:
        print(f"- {line}")


def _score(task, per_event):
    """Accuracy from per-event correctness, MAE from absolute errors."""
    per_event = np.asarray(per_event, np.float64)
    if task == "regression":
        return float(np.nanmean(per_event))
    return float(per_event.mean())


def _cell(score, n, dt):
    r = n / dt
    rate = f"{r / 1000:,.0f}k" if r >= 10_000 else f"{r / 1000:,.1f}k"
    return f"{score:.4g} / {rate}"
