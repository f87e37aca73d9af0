"""Plasticity over a long life: learnd's default pipeline (in-process, no Kafka) on a stream whose
concept is replaced by a new random one every ``--every`` events, hundreds of times. Does the
learner relearn the 200th concept as fast as the first (Dohare et al., Nature 2024: networks
trained on a long sequence of tasks lose the ability to learn new ones)?

The stream (``RandomConcepts``): river's RandomRBF recipe, vectorised, with a fresh model per
concept: ``centroids`` centres uniform in the unit cube, each with a random class, standard
deviation and weight; an event picks a centre by weight and lies at a Gaussian distance from it
in a random direction. Each concept's centres, classes and spreads are drawn anew from
``(seed, concept)``: a new task, which nothing learned before helps with.

Recovery after a switch: events until the accuracy over the last ``WINDOW`` events is within
``WITHIN`` of that concept's plateau (its accuracy over the last ``PLATEAU`` events), checked
every 100 events; also the accuracy over the first ``EARLY`` events after the switch, which no
plateau definition can flatter. Both are test-then-train: each event predicted by the served
model (the average of the weights) before it is learned, exactly as the daemon scores itself.

The pipeline is fed as when the daemon keeps up with the log (each micro-batch followed by its
rehearsal steps), drift detection, its reaction and the challenger on, as in production.
``--state FILE`` makes the run resumable: after each concept the pipeline's checkpoint state
and the table's rows so far are saved, and a rerun with the same arguments goes on from there.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _progress import bar, say

WINDOW = 500
WITHIN = 0.02
PLATEAU = 10_000
EARLY = 5_000


class RandomConcepts:
    """``every`` events per concept, a new random RandomRBF model per concept."""

    def __init__(self, seed=1, every=50_000, n_features=10, centroids=50, classes=2):
        self.seed, self.every, self.d, self.k, self.c = seed, every, n_features, centroids, classes

    def concept(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        model = np.random.default_rng([self.seed, j, 0])
        centres = model.random((self.k, self.d))
        labels = model.integers(0, self.c, self.k)
        std = model.random(self.k)
        weight = model.random(self.k)
        rng = np.random.default_rng([self.seed, j, 1])
        pick = rng.choice(self.k, self.every, p=weight / weight.sum())
        direction = rng.uniform(-1, 1, (self.every, self.d))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        X = centres[pick] + direction * (rng.normal(size=(self.every, 1)) * std[pick, None])
        return X.astype(np.float32), labels[pick].astype(np.float32)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def concept_row(correct: np.ndarray) -> tuple[int | None, float, float]:
    """(recovery in events or None, plateau accuracy, accuracy over the first EARLY events)."""
    plateau = float(correct[-PLATEAU:].mean())
    csum = np.concatenate([[0], np.cumsum(correct)])
    found = None
    for t in range(WINDOW, len(correct) + 1, 100):
        if (csum[t] - csum[t - WINDOW]) / WINDOW >= plateau - WITHIN:
            found = t
            break
    return found, plateau, float(correct[:EARLY].mean())


@torch.no_grad()
def health(learner, X: np.ndarray) -> tuple[float, float]:
    """Dohare et al.'s two symptoms of lost plasticity, on the trained weights: their RMS, and
    the share of hidden ReLU units active on none of ``X`` (dead: no gradient reaches them)."""
    params = list(learner.net.parameters())
    h = torch.from_numpy(learner.x_scaler.transform(X))
    dead = units = 0
    for i in range(len(params) // 2 - 1):
        h = torch.relu(torch.nn.functional.linear(h, params[2 * i], params[2 * i + 1]))
        dead += int((h.amax(dim=0) <= 0).sum())
        units += h.shape[1]
    rms = float(learner._flat.pow(2).mean().sqrt())
    return rms, dead / max(units, 1)


def _pipeline(learning: dict):
    import tempfile

    from learnd.adapters.fakes import ListDeadLetters, ManualClock
    from learnd.daemon.config import LearndConfig
    from learnd.daemon.learning.learner import Learner
    from learnd.daemon.pipeline import Pipeline

    cfg = LearndConfig.model_validate(
        {
            "schema": {"task": "binary", "n_features": 10},
            "learning": learning,
            "checkpoint": {"dir": tempfile.mkdtemp(prefix="learnd-plasticity-")},
            "serving": {"tcp_port": 0},
        }
    )
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    return cfg, Pipeline(cfg, learner, ListDeadLetters(), ManualClock())


def plasticity(args):
    torch.set_num_threads(1)
    logging.getLogger("learnd").setLevel(logging.ERROR)  # an alarm or two per switch, 200 times
    learning: dict = {}  # --set drift.challenger.enabled=false: learning.drift.challenger...
    for kv in args.set or ():
        key, value = kv.split("=", 1)
        *path, last = key.removeprefix("learning.").split(".")
        node = learning
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    cfg, pipe = _pipeline(learning)
    stream = RandomConcepts(args.seed, args.every)
    # per concept: recovery, plateau, early accuracy, rss, alarms, seconds, challengers promoted,
    # weight RMS, dead units
    rows: list[tuple] = []
    state_path = Path(args.state) if args.state else None
    if state_path and state_path.exists():
        saved = torch.load(state_path, weights_only=False)
        if saved["args"] != _key(args):
            raise SystemExit(f"{state_path} is from a run with {saved['args']}; remove it")
        pipe.load_state_dict(saved["pipeline"])
        rows = saved["rows"]
        say(f"resumed at concept {len(rows)} from {state_path}")
    errors: list[np.ndarray] = []
    learn_many = pipe.learner.learn_many

    def recording(Xb, yb):
        result = learn_many(Xb, yb)
        errors.append(result.errors)
        return result

    pipe.learner.learn_many = recording  # a promoted challenger is adopted into this learner
    b = cfg.learning.batch_size
    progress = bar(args.concepts * args.every, "concepts", "ev")
    progress.update(len(rows) * args.every)
    ch = pipe.challenger
    for j in range(len(rows), args.concepts):
        X, y = stream.concept(j)
        promoted = ch.promoted if ch is not None else 0
        t0 = time.perf_counter()
        for i in range(0, len(y), b):
            pipe.learn_arrays(X[i : i + b], y[i : i + b])
        dt = time.perf_counter() - t0
        correct = np.concatenate(errors) == 0
        errors.clear()
        rec, plateau, early = concept_row(correct)
        alarms = sum(1 for a in pipe.alarms_at if j * args.every <= a < (j + 1) * args.every)
        rms, dead = health(pipe.learner, X[-2000:])
        promoted = (ch.promoted if ch is not None else 0) - promoted
        rows.append((rec, plateau, early, rss_bytes(), alarms, dt, promoted, rms, dead))
        progress.update(args.every)
        if args.verbose:
            say(
                f"concept {j:4d}: recovery {rec}, plateau {plateau:.4f}, first {EARLY}: "
                f"{early:.4f}, alarms {alarms}, promoted {promoted}, weight rms {rms:.3f}, dead "
                f"{100 * dead:.1f}%, rss {rss_bytes() / 2**20:.1f} MiB, {args.every / dt:,.0f} ev/s"
            )
        if state_path and ((j + 1) % args.save_every == 0 or j + 1 == args.concepts):
            pipe.flush()
            tmp = state_path.with_suffix(".tmp")
            torch.save({"args": _key(args), "pipeline": pipe.state_dict(), "rows": rows}, tmp)
            os.replace(tmp, state_path)
    progress.close()
    report(rows, args)


def _key(args) -> dict:
    return {"seed": args.seed, "every": args.every, "set": sorted(args.set or [])}


def _groups(n: int) -> list[tuple[int, int]]:
    """Switch ranges (1-based, inclusive; switch k starts concept k) for the table: the first
    ten, the ten up to the middle, the last eleven (1-10, 90-100, 190-200 of 200)."""
    last = n - 1
    out = [(1, min(10, last))]
    if last // 2 - 10 > 10:
        out.append((last // 2 - 10, last // 2))
    if last - 10 > 10:
        out.append((last - 10, last))
    return out


def report(rows, args):
    n = len(rows)
    total_s = sum(r[5] for r in rows)
    say(
        f"\n{n} concepts of {args.every:,} events ({n * args.every:,} events, {n - 1} switches), "
        f"RandomRBF-style, 10 features, 50 centres, 2 classes, seed {args.seed}; learnd's default "
        f"config{' with ' + ', '.join(args.set) if args.set else ''}, keeping up (rehearsal on)"
    )
    say(
        f"recovery: events until accuracy over the last {WINDOW} is within {100 * WITHIN:g} points "
        f"of the concept's plateau (accuracy over its last {PLATEAU:,}); '-': never"
    )
    say(
        f"\n| switches | median recovery (events) | never | median plateau | "
        f"median accuracy, first {EARLY:,} | alarms per switch | challengers promoted | "
        f"weight RMS | dead units | RSS MiB (end) |"
    )
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lo, hi in _groups(n):
        part = rows[lo : hi + 1]
        recs = [r[0] for r in part if r[0] is not None]
        say(
            f"| {lo}-{hi} | {f'{statistics.median(recs):,.0f}' if recs else '-'} | "
            f"{sum(r[0] is None for r in part)} | {statistics.median(r[1] for r in part):.4f} | "
            f"{statistics.median(r[2] for r in part):.4f} | "
            f"{statistics.mean(r[4] for r in part):.1f} | {sum(r[6] for r in part)} | "
            f"{statistics.median(r[7] for r in part):.3f} | "
            f"{100 * statistics.median(r[8] for r in part):.1f}% | {part[-1][3] / 2**20:.1f} |"
        )
    first, last = _groups(n)[0], _groups(n)[-1]

    def med(lo, hi):
        return statistics.median(r[0] for r in rows[lo : hi + 1] if r[0] is not None)

    q = max(1, (n - 1) // 4)
    say(
        f"\nmedian recovery, switches {last[0]}-{last[1]} over {first[0]}-{first[1]}: "
        f"{med(*last) / med(*first):.2f}x (first quarter, switches 1-{q}: {med(1, q):,.0f}; "
        f"last quarter, {n - q}-{n - 1}: {med(n - q, n - 1):,.0f})"
    )
    say(
        f"RSS after concept 10 {rows[min(10, n - 1)][3] / 2**20:.1f} MiB -> end {rows[-1][3] / 2**20:.1f} MiB; {n * args.every / total_s:,.0f} examples/s "
        f"({total_s / 60:.1f} min learning)"
    )
