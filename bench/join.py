"""The label join in the pipeline, without a broker: throughput, exactness, accuracy, memory.

    nice .venv/bin/python bench/join.py                   # 200k events
    nice .venv/bin/python bench/join.py --events 50000    # quicker

The drifting SEA stream goes through :class:`learnd.daemon.pipeline.Pipeline` three ways, as
records from the broker would (the same decoding, validation and micro-batches):

- *inline*: every event carries its label;
- *join*: unlabelled events (features and id) and, on the label topic, each label delayed
  uniformly 0-30 s of stream time at 5,000 events/s, with ``--missing`` of them never sent;
- the same, labels arriving before their features for a tenth of the ids.

Rehearsal is off in all three (it would run only while keeping up, and costs the same in each).

It prints events/s, matched share of the labels sent, ids learned twice (``checkpoint.audit_ids``),
prequential accuracy of the learner (over the events it learned), the bytes per pending row
beyond its features (tracemalloc over 100k pending rows), and RSS before and after.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from learnd.adapters.fakes import ListDeadLetters, ManualClock  # noqa: E402
from learnd.daemon.config_labels import LabelsConfig  # noqa: E402
from learnd.daemon.events.record import Record  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402
from learnd.daemon.labels.join import Joiner  # noqa: E402
from learnd.daemon.learning.learner import Learner  # noqa: E402
from learnd.daemon.pipeline import Pipeline  # noqa: E402
from tests.conftest import sea_config  # noqa: E402

RATE = 5000.0  # events per second of stream time
POLL = 2000  # records per poll, as kafka.max_poll_records


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(tmp: Path, mode: str):
    cfg = sea_config(
        tmp,
        labels={"mode": mode, "ttl_s": 60, "max_pending": 1_000_000},
        checkpoint={"audit_ids": True},
        learning={
            "gate": {"enabled": False},
            "publish_every_s": 3600,
            "replay": {"steps_per_batch": 0},
        },
        compression={"enabled": False},
    )
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    wall = ManualClock(0.0)
    return Pipeline(cfg, learner, ListDeadLetters(), ManualClock(), wall=wall), wall, cfg


def stream(n: int, mode: str, missing: float, early: float, seed: int, cfg):
    """Polls of (records, stream time) in arrival order."""
    rng = np.random.default_rng(seed)
    events = list(DriftingSEA(seed=seed).take(n))
    ev, lt = cfg.kafka.topic, cfg.kafka.labels_topic
    arrivals: list[tuple[float, int, Record]] = []
    label_off = 0
    for i, e in enumerate(events):
        t = i / RATE
        if mode == "inline":
            arrivals.append((t, 0, Record(ev, 0, i, orjson.dumps({**e, "id": i}))))
            continue
        arrivals.append(
            (t, 0, Record(ev, 0, i, orjson.dumps({"id": i, "features": e["features"]})))
        )
        if rng.random() < missing:
            continue
        delay = -rng.uniform(0, 1) if rng.random() < early else rng.uniform(0, 30)
        value = orjson.dumps({"id": i, "label": e["label"]})
        arrivals.append((t + delay, 1, Record(lt, 0, -1, value)))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    out = []
    for t, kind, rec in arrivals:
        if kind == 1:
            rec = Record(rec.topic, 0, label_off, rec.value)
            label_off += 1
        out.append((t, rec))
    return out, label_off


def run(n: int, mode: str, missing: float, early: float, tmp: Path) -> dict:
    pipe, wall, cfg = build(tmp, "inline" if mode == "inline" else "join")
    polls, labels_sent = stream(n, mode, missing, early, 11, cfg)
    rss0 = rss_mib()
    t0 = time.perf_counter()
    for start in range(0, len(polls), POLL):
        chunk = polls[start : start + POLL]
        wall.t = chunk[-1][0]
        pipe.process([r for _, r in chunk])
    wall.t += 61.0  # everything still pending expires
    pipe.tick()
    pipe.flush()
    secs = time.perf_counter() - t0
    audit = pipe.audit[:n]
    out = {
        "mode": mode if early == 0 else f"{mode}, {early:.0%} early",
        "events/s": n / secs,
        "learned": int(pipe.learner.events_learned),
        "twice": int((audit > 1).sum()),
        "accuracy": pipe.metrics.summary()["accuracy"],
        "rss_mib": (rss0, rss_mib()),
    }
    if pipe.join is not None:
        o = pipe.join.joiner.outcomes
        out["matched"] = o["matched"] / max(1, labels_sent)
    return out


def pending_bytes(rows: int = 100_000, dim: int = 3) -> float:
    """Bytes per pending row beyond its features (dim float32s)."""
    j = Joiner(LabelsConfig(mode="join", max_pending=rows), dim)
    row = np.zeros(dim, np.float32)
    rec = Record("t", 0, 0, None)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(rows):
        j.add_features(i, row, rec, now=0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / rows - 4 * dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--missing", type=float, default=0.01, help="share of labels never sent")
    args = ap.parse_args()
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory(prefix="join-bench-") as tmp:
        for mode, early in (("inline", 0.0), ("join", 0.0), ("join", 0.1)):
            rows.append(run(args.events, mode, args.missing, early, Path(tmp)))
    print(
        f"{args.events} events, labels delayed U(0, 30) s at {RATE:.0f} events/s, "
        f"{args.missing:.0%} never sent\n"
    )
    print("| mode | events/s | learned | matched / sent | learned twice | accuracy | max RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        matched = f"{r['matched']:.4%}" if "matched" in r else "-"
        print(
            f"| {r['mode']} | {r['events/s']:,.0f} | {r['learned']:,} | {matched} | {r['twice']} "
            f"| {r['accuracy']:.4f} | {r['rss_mib'][1]:.0f} |"
        )
    print(f"\npending state: {pending_bytes():.0f} bytes per pending row beyond its features")


if __name__ == "__main__":
    main()
