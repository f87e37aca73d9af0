"""Prediction quality under drift: learnd's learner against river and Vowpal Wabbit, one run.

    .venv/bin/python bench/quality.py            # 100k events per synthetic stream (~10 min)
    .venv/bin/python bench/quality.py --quick    # 20k events, no ARF on the long streams
    .venv/bin/python bench/quality.py --pace 30000,100000   # learnd with events arriving at a rate
    .venv/bin/python bench/quality.py --pace 100000 --seeds 5   # over seeds, against the best (~25 min)
    .venv/bin/python bench/quality.py --pace 100000 --seeds 12 --streams Phishing,Bananas
    .venv/bin/python bench/quality.py --streams SEA,Agrawal --plots docs/img   # the pictures
    .venv/bin/python bench/quality.py --typed --events 20000   # raw strings, missing values
    .venv/bin/python bench/quality.py --suite all --events 20000  # the wide suite, CapyMOA too

Every system sees the same seeded streams, test-then-train, one example at a time for river
and VW and in learnd's default micro-batches for learnd (through ``Pipeline.learn_arrays``: the
daemon's own learning path with its guards, drift detection and drift reaction, minus Kafka),
twice: as when the daemon keeps up with the log (each batch followed by rehearsal steps) and as
when the whole stream is a backlog already in the log (bench/_backlog.py: ``Pipeline.process``
fed in polls, told the lag, as the daemon catches up; the examples/s there are what catching up
runs at). Printed: prequential accuracy and examples/s per system and stream; for learnd on the streams
with known switch points, each drift alarm's delay, false alarms, and the events needed after
each switch to get back within 1 point of the pre-switch accuracy (ARF's alongside).
VW needs ``pip install vowpalwabbit``; without it its column says so. Single CPU thread.
``--plots DIR`` also writes one PNG per stream to DIR: accuracy over the stream, every system,
switches and learnd's drift alarms marked (bench/_plots.py). Progress and an ETA go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _anchors import river_systems, run_river, run_vw  # noqa: E402
from _backlog import learn_backlog  # noqa: E402
from _progress import bar, say  # noqa: E402
from _streams import sea, streams  # noqa: E402
from river import forest  # noqa: E402

from learnd.adapters.fakes import ListDeadLetters, ManualClock  # noqa: E402
from learnd.daemon.config import LearndConfig  # noqa: E402
from learnd.daemon.learning.learner import Learner  # noqa: E402
from learnd.daemon.pipeline import Pipeline  # noqa: E402

RECOVERY_WINDOW = 500


# ---------------------------------------------------------------- systems
def _learnd(X, y, labels, seed=0, learning=None, features=None, model=None):
    """learnd's default config (with ``model.seed``, ``learning`` and ``model`` keys over the
    defaults, and ``features``, a typed ``[schema.features]`` table, for encoded rows) and
    pipeline for this stream, with each step's errors recorded (the prequential outputs):
    ``(cfg, pipe, y as learned, errors)``."""
    task = "regression" if labels is None else "binary" if len(labels) == 2 else "multiclass"
    schema = {"task": task, "n_features": X.shape[1]} if features is None else {"task": task}
    if features is not None:
        schema["features"] = features
    if task == "multiclass":
        schema["classes"] = [str(c) for c in labels]
    cfg = LearndConfig.model_validate(
        {
            "schema": schema,
            "model": {"seed": seed, **(model or {})},
            "learning": learning or {},
            "checkpoint": {"dir": tempfile.mkdtemp()},
            "serving": {"tcp_port": 0},
        }
    )
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    pipe = Pipeline(cfg, learner, ListDeadLetters(), ManualClock())
    errors: list[np.ndarray] = []
    learn_many = learner.learn_many

    def recording(Xb, yb):
        result = learn_many(Xb, yb)
        errors.append(result.errors)
        return result

    learner.learn_many = recording  # type: ignore[method-assign]
    return cfg, pipe, (y if task == "multiclass" else y.astype(np.float32)), errors


def run_learnd_recorded(X, y, labels, behind=False, seed=0, learning=None, features=None):
    """learnd with per-event correctness recorded (``run_learnd_errors``)."""
    dt, errors, alarms = run_learnd_errors(X, y, labels, behind, seed, learning, features)
    return dt, errors == 0, alarms


def run_learnd_errors(X, y, labels, behind=False, seed=0, learning=None, features=None, model=None):
    """learnd with per-event errors recorded (0/1, or absolute error when ``labels`` is None:
    regression). ``behind``: the stream is a full backlog, learned the way the daemon catches up
    (bench/_backlog.py: ``Pipeline.process`` in polls of 500, told the lag before each, so the
    catch-up pace and rehearsal follow it). Otherwise as when it keeps up: each batch followed
    by the rehearsal steps (the default config both ways)."""
    cfg, pipe, yy, errors = _learnd(X, y, labels, seed, learning, features, model)
    if behind:
        dt, _sizes = learn_backlog(pipe, X, yy)
        return dt, np.concatenate(errors), list(pipe.alarms_at)
    b = cfg.learning.batch_size
    t0 = time.perf_counter()
    for i in range(0, len(y), b):
        pipe.learn_arrays(X[i : i + b], yy[i : i + b])
    dt = time.perf_counter() - t0
    return dt, np.concatenate(errors), list(pipe.alarms_at)


def run_learnd_paced(X, y, labels, pace, seed=0):
    """learnd fed as if event ``i`` arrived at ``i / pace`` seconds: before each micro-batch the
    pipeline is told the lag the daemon's consumer would see (events arrived, not yet learned),
    so it rehearses only while it keeps up and takes catch-up batches when far behind, as live.
    Returns accuracy, the share of batches followed by rehearsal, the rate achieved (events over
    the time the last one was learned at), the largest lag, per-event correctness and alarms."""
    _, pipe, yy, errors = _learnd(X, y, labels, seed)
    pipe.clock = time.perf_counter  # the pace and the arrivals measure real steps
    n, i = len(y), 0
    batches = rehearsed = max_lag = 0
    t0 = time.perf_counter()
    while i < n:
        b = pipe.batcher.size
        due = t0 + min(n, i + b) / pace  # when this batch's last event has arrived
        while (now := time.perf_counter()) < due:  # idle until it arrives, as a live consumer
            if due - now > 2e-4:
                time.sleep(due - now - 1e-4)
        arrived = min(n, int((now - t0) * pace))
        j = min(n, i + b)
        pipe.set_backlog(arrived - j)
        pipe.pace_batches(arrived - j)
        max_lag = max(max_lag, arrived - j)
        rehearsed += pipe.replay_steps() > 0
        batches += 1
        pipe.learn_arrays(X[i:j], yy[i:j])
        i = j
    dt = time.perf_counter() - t0
    correct = np.concatenate(errors) == 0
    return PacedRun(
        float(correct.mean()), rehearsed / batches, n / dt, max_lag, correct, list(pipe.alarms_at)
    )


class PacedRun(NamedTuple):
    accuracy: float
    rehearsed: float  # the share of micro-batches followed by rehearsal
    rate: float  # events over the time the last one was learned at
    max_lag: int
    correct: np.ndarray  # per event
    alarms: list[int]  # event positions of the drift alarms


def paced(n, quick, paces, only=()):
    """learnd's accuracy with its events arriving at each of ``paces`` (events/s)."""
    print(
        f"learnd with events arriving at a fixed rate (synthetic streams {n:,} events): accuracy,"
        "\nshare of micro-batches followed by rehearsal, rate achieved, largest lag\n"
    )
    print("| stream | " + " | ".join(f"{p:,.0f}/s" for p in paces) + " |")
    print("|---|" + "---|" * len(paces))
    drift_rows = []
    data = streams(n, quick, only)
    runs = bar(len(data) * len(paces), "paced runs")
    for name, X, y, labels, switches in data:
        cells = []
        for p in paces:
            r = run_learnd_paced(X, y, labels, p)
            runs.update()
            cells.append(
                f"{r.accuracy:.3f}, {r.rehearsed:.0%}, {_rate(len(y), len(y) / r.rate)},"
                f" {r.max_lag:,}"
            )
            if switches:
                delays, false = alarm_delays(r.alarms, switches)
                drift_rows.append((name, p, switches, delays, false, recovery(r.correct, switches)))
        say(f"| {name} ({len(y):,}) | " + " | ".join(cells) + " |")
    runs.close()
    print("\nlearnd's drift alarms and recovery at those rates (events; '-' as in the main run)\n")
    print("| stream | rate | switches at | alarm delay | false alarms | learnd recovery |")
    print("|---|---|---|---|---|---|")
    for name, p, switches, delays, false, rec in drift_rows:
        print(
            f"| {name} | {p:,.0f}/s | {', '.join(f'{s:,}' for s in switches)} | {_list(delays)} |"
            f" {false} | {_list(rec)} |"
        )


def paced_over_seeds(n, quick, pace, k, others=True, only=()):
    """At one arrival rate, learnd over model seeds 0..k-1 against the best other system over
    its seeds 7..7+k-1 (LR and VW draw nothing at random: run once). On the small streams one
    seed's accuracy moves by up to a point either way, for learnd and for ARF alike, so a single
    seed can put either side of a 0.5-point line. All learnd runs come first, so that nothing
    else was running in this process while they were timed."""
    data = streams(n, quick, only)
    progress = bar(len(data) * (2 * k + (1 if others else 0)), "learnd seeds, then the others")
    learnd = [
        [run_learnd_paced(X, y, labels, pace, s) for s in runs_of(progress, range(k))]
        for _, X, y, labels, _ in data
    ]
    ceiling = [
        [run_learnd_recorded(X, y, labels, seed=s)[1].mean() for s in runs_of(progress, range(k))]
        for _, X, y, labels, _ in data
    ]
    print(
        f"learnd at {pace:,.0f} events/s over model seeds 0..{k - 1}, against the best other"
        f" system's mean over seeds 7..{6 + k} (synthetic streams {n:,} events); line = that"
        " mean - 0.5 points\n"
    )
    print(
        "| stream | learnd: mean (min-max) | learnd runs at/above the line | rehearsed, rate |"
        " learnd keeping up: mean | best other: mean (min-max) | line |"
    )
    print("|---|---|---|---|---|---|---|")
    for (name, X, y, labels, _), runs, up in zip(data, learnd, ceiling, strict=True):
        accs = [r.accuracy for r in runs]
        share = np.mean([r.rehearsed for r in runs])
        rate = min(r.rate for r in runs)  # the slowest run
        cells = ["not run"] * 3
        if others:
            best, ref = _best_other(X, y, labels, k, quick)
            progress.update()
            line = float(np.mean(ref)) - 0.005
            cells = [
                f"{sum(a >= line for a in accs)}/{k}",
                f"{best}: {_spread(ref)}",
                f"{line:.4f}",
            ]
        say(
            f"| {name} ({len(y):,}) | {_spread(accs)} | {cells[0]} | {share:.0%},"
            f" {_rate(len(y), len(y) / rate)} | {np.mean(up):.4f} | {cells[1]} | {cells[2]} |"
        )
    progress.close()


def _best_other(X, y, labels, k, quick):
    """The other system with the best mean accuracy over seeds 7..7+k-1, and its accuracies."""
    refs: dict[str, list[float]] = {}
    for seed in range(7, 7 + k):
        for system, model in river_systems(len(labels), seed):
            skip = system == "river LR" and seed > 7
            skip |= system == "river ARF" and quick and len(y) > 10_000
            if not skip:
                refs.setdefault(system, []).append(float(run_river(model, X, y)[1].mean()))
    vw = run_vw(X, y, len(labels))
    if vw is not None:
        refs["VW logistic"] = [float(vw[1].mean())]
    best = max(refs, key=lambda system: np.mean(refs[system]))
    return best, refs[best]


def runs_of(progress, iterable):
    """``iterable``, advancing ``progress`` by one after each item."""
    for item in iterable:
        yield item
        progress.update()


def _spread(values):
    return f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def alarm_delays(alarms, switches):
    """Each switch's first alarm delay (None: none within 5,000 events), and false alarms."""
    false = sum(1 for a in alarms if not any(s <= a < s + 5000 for s in switches))
    delays = []
    for s in switches:
        hits = [a - s for a in alarms if s <= a < s + 5000]
        delays.append(hits[0] if hits else None)
    return delays, false


def recovery(correct, switches):
    """Events after each switch until accuracy over the last RECOVERY_WINDOW events is back
    within 1 point of the 2000 events before the switch (None: never, before the next one)."""
    out = []
    bounds = [*switches[1:], len(correct)]
    for s, end in zip(switches, bounds, strict=True):
        pre = correct[max(0, s - 2000) : s].mean()
        csum = np.concatenate([[0], np.cumsum(correct)])
        found = None
        for t in range(s + RECOVERY_WINDOW, end + 1, 10):
            if (csum[t] - csum[t - RECOVERY_WINDOW]) / RECOVERY_WINDOW >= pre - 0.01:
                found = t - s
                break
        out.append(found)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--learnd-only", action="store_true", help="skip river and VW (learnd's columns only)"
    )
    ap.add_argument(
        "--recovery-seeds",
        type=int,
        default=0,
        metavar="K",
        help="only compare SEA recoveries (learnd both ways, or at --pace R; ARF) over seeds"
        " 7..7+K-1",
    )
    ap.add_argument(
        "--pace",
        default="",
        metavar="R[,R...]",
        help="only learnd, fed as if events arrived at R events/s (comma-separated rates)",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=0,
        metavar="K",
        help="with --pace R: learnd over K model seeds at R events/s against the best other"
        " system over K seeds (slow: ARF runs K times per stream)",
    )
    ap.add_argument(
        "--streams",
        default="",
        metavar="NAME[,NAME...]",
        help="only the streams whose names start with these (e.g. Phishing,Bananas)",
    )
    ap.add_argument(
        "--plots",
        default="",
        metavar="DIR",
        help="also write one PNG per stream to DIR (e.g. docs/img; needs matplotlib)",
    )
    ap.add_argument(
        "--suite",
        choices=("seven", "new", "all"),
        default="",
        help="the wide suite (bench/_wide_quality.py): the seven streams, the new ones, or all,"
        " with CapyMOA's anchors and regression streams",
    )
    ap.add_argument(
        "--typed",
        action="store_true",
        help="the typed streams instead (raw strings and missing values; bench/_typed_quality.py)",
    )
    args = ap.parse_args()
    only = tuple(s for s in args.streams.split(",") if s)
    if args.typed:
        from _typed_quality import compare_typed

        torch.set_num_threads(1)
        compare_typed(20_000 if args.quick else args.events, only, run_learnd_recorded)
        return
    if args.suite:
        from _wide_quality import compare_wide

        torch.set_num_threads(1)
        n = 20_000 if args.quick else args.events
        compare_wide(args.suite, n, args.quick, only, run_learnd_errors, alarm_delays)
        return
    if args.pace and args.seeds:
        torch.set_num_threads(1)
        n = 20_000 if args.quick else args.events
        pace = float(args.pace.split(",")[0])
        paced_over_seeds(n, args.quick, pace, args.seeds, not args.learnd_only, only)
        return
    if args.recovery_seeds:
        torch.set_num_threads(1)
        pace = float(args.pace.split(",")[0]) if args.pace else None
        recovery_over_seeds(args.events, args.recovery_seeds, not args.learnd_only, pace)
        return
    if args.pace:
        torch.set_num_threads(1)
        paced(
            20_000 if args.quick else args.events,
            args.quick,
            [float(r) for r in args.pace.split(",")],
            only,
        )
        return
    torch.set_num_threads(1)
    plots = Path(args.plots) if args.plots else None
    compare(20_000 if args.quick else args.events, args.quick, only, args.learnd_only, plots)


HEADER = [
    "learnd, keeping up",
    "learnd, behind",
    "river LR",
    "river HATC",
    "river ARF",
    "VW logistic",
]


def compare(n, quick, only, learnd_only, plots):
    """The main run: every system on every stream, the accuracy table, then learnd's drift
    alarms and recoveries; with ``plots``, one PNG per stream into that folder."""
    print(f"torch {torch.__version__}, 1 thread; synthetic streams {n:,} events, seed 7\n")
    print("| stream | " + " | ".join(HEADER) + " |")
    print("|---|" + "---|" * len(HEADER))
    data = streams(n, quick, only)
    per_stream = 2 if learnd_only else len(HEADER)
    runs = bar(len(data) * per_stream, "systems x streams")
    drift_rows, pictures = [], []
    for name, X, y, labels, switches in data:
        k = len(labels)
        cells, curves = [], {}
        arf_correct = None
        runs.set_postfix_str(f"{name[:14]}: learnd")
        dt, correct, alarms = run_learnd_recorded(X, y, labels)
        cells.append(f"{correct.mean():.3f} / {_rate(len(y), dt)}")
        bdt, behind, balarms = run_learnd_recorded(X, y, labels, behind=True)
        cells.append(f"{behind.mean():.3f} / {_rate(len(y), bdt)}")
        curves |= {HEADER[0]: correct, HEADER[1]: behind}
        runs.update(2)
        for system, model in () if learnd_only else river_systems(k):
            runs.set_postfix_str(f"{name[:14]}: {system}")
            if isinstance(model, forest.ARFClassifier) and quick and len(y) > 10_000:
                cells.append("skipped (--quick)")
                runs.update()
                continue
            with bar(len(y), system, "ev") as events:
                mdt, mcorrect = run_river(model, X, y, events)
            if isinstance(model, forest.ARFClassifier):
                arf_correct = mcorrect
            cells.append(f"{mcorrect.mean():.3f} / {_rate(len(y), mdt)}")
            curves[system] = mcorrect
            runs.update()
        if learnd_only:
            cells.extend(["not run"] * (len(HEADER) - 2))
        else:
            runs.set_postfix_str(f"{name[:14]}: VW")
            vw = run_vw(X, y, k)
            cells.append(
                "not installed" if vw is None else f"{vw[1].mean():.3f} / {_rate(len(y), vw[0])}"
            )
            if vw is not None:
                curves[HEADER[-1]] = vw[1]
            runs.update()
        say(f"| {name} ({len(y):,}) | " + " | ".join(cells) + " |")
        if switches:
            rec_arf = recovery(arf_correct, switches) if arf_correct is not None else None
            for mode, al, corr in (("keeping up", alarms, correct), ("behind", balarms, behind)):
                delays, false = alarm_delays(al, switches)
                rec = recovery(corr, switches)
                drift_rows.append((f"{name}, {mode}", switches, delays, false, rec, rec_arf))
        if plots is not None:
            from _plots import plot_stream

            pictures.append(plot_stream(plots, name, switches, curves, alarms))
    runs.close()
    print(
        "\nlearnd's drift alarms and recovery (events; '-' = none within 5,000 / before the next switch)\n"
    )
    print("| stream | switches at | alarm delay | false alarms | learnd recovery | ARF recovery |")
    print("|---|---|---|---|---|---|")
    for name, switches, delays, false, rec, rec_arf in drift_rows:
        print(
            f"| {name} | {', '.join(f'{s:,}' for s in switches)} | {_list(delays)} | {false} | "
            f"{_list(rec)} | {_list(rec_arf) if rec_arf is not None else 'not run'} |"
        )
    for path in pictures:
        print(f"wrote {path}")


def recovery_over_seeds(n, k, arf=True, pace=None):
    """SEA's recoveries after each switch, per seed, and how often learnd beat ARF: one seed's
    recoveries turn on where the hard stretches of that seed's stream fall. With ``pace``,
    learnd is fed at that many events/s instead (``run_learnd_paced``)."""
    print(f"SEA, {n:,} events, 3 abrupt switches; recovery in events (within 1 point of the")
    print("2,000 events before the switch, over 500; '-': not before the next switch)\n")
    modes = [f"learnd at {pace:,.0f}/s"] if pace else ["learnd, keeping up", "learnd, behind"]
    print("| seed | " + " | ".join(modes) + " | ARF |")
    print("|---|" + "---|" * (len(modes) + 1))
    rows = []
    for seed in bar(k, "SEA seeds", "seed", range(7, 7 + k)):
        _, X, y, labels, switches = sea(n, seed)
        if pace:
            runs = [recovery(run_learnd_paced(X, y, labels, pace).correct, switches)]
        else:
            runs = [
                recovery(run_learnd_recorded(X, y, labels)[1], switches),
                recovery(run_learnd_recorded(X, y, labels, behind=True)[1], switches),
            ]
        ref = recovery(run_river(forest.ARFClassifier(seed=7), X, y)[1], switches) if arf else None
        rows.append((*runs, ref))
        cells = " | ".join(_list(r) for r in runs)
        say(f"| {seed} | {cells} | {_list(ref) if ref else 'not run'} |")
    if not arf:
        return
    for i, mode in enumerate(modes):
        wins = [sum(1 for r in rows if _faster(r[i][j], r[-1][j])) for j in range(len(rows[0][-1]))]
        med = [_median([r[i][j] for r in rows]) for j in range(len(wins))]
        ref = [_median([r[-1][j] for r in rows]) for j in range(len(wins))]
        print(
            f"\n{mode}: faster than ARF on {', '.join(f'{w}/{k}' for w in wins)} seeds "
            f"(switches 1, 2, 3); median recovery {_list(med)} against ARF's {_list(ref)}"
        )


def _faster(a, b):
    """Whether recovery ``a`` came sooner than ``b`` (None: never)."""
    return a is not None and (b is None or a < b)


def _median(values):
    """The median with None (never recovered) counted as the largest."""
    ordered = sorted(values, key=lambda v: (v is None, v or 0))
    return ordered[len(ordered) // 2]


def _rate(n, dt):
    r = n / dt
    return f"{r / 1000:,.0f}k" if r >= 10_000 else f"{r / 1000:,.1f}k"


def _list(values):
    return ", ".join("-" if v is None else f"{v:,}" for v in values)


if __name__ == "__main__":
    main()
