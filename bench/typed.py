"""Typed features: the cost of a 2**18-bucket category, RSS over many distinct values, and the
served cost of a typed prediction.

    nice -n 10 .venv/bin/python bench/typed.py --events 200000

Learning: the same seeded stream (8 numbers, and an id drawn from ``--ids`` distinct values
whose click probability depends on the id) learned by ``Learner.learn_many`` plus its
rehearsal steps, once with the id as a ``category`` of 2**18 buckets and once with the id
dropped. Decoding (JSON to encoded rows) is timed apart: the typed decoder parses record by
record in Python, the numeric one takes a vectorised fast path. RSS is read from
``/proc/self/statm`` every 10% of the typed run. Serving: one-row ``Snapshot.predict_many``
and ``RequestHandler.handle`` of a typed event against a numeric one of the same width.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import torch  # noqa: E402

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig  # noqa: E402
from learnd.daemon.events.decoder import EventDecoder  # noqa: E402
from learnd.daemon.events.record import Record  # noqa: E402
from learnd.daemon.learning.learner import Learner  # noqa: E402
from learnd.daemon.serving.requests import RequestHandler  # noqa: E402
from learnd.daemon.serving.snapshot import Draft, SnapshotRef  # noqa: E402

NUMS = tuple(f"x{i}" for i in range(8))
TYPED = {**{n: "number" for n in NUMS}, "id": {"type": "category", "buckets": 1 << 18}}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stream(n: int, ids: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    who = rng.integers(ids, size=n)
    bias = np.sin(who * 0.7071)  # each id's own propensity
    y = (X[:, 0] + 1.5 * bias + 0.3 * rng.normal(size=n) > 0).astype(int)
    return [
        {
            "features": {**dict(zip(NUMS, X[i].tolist(), strict=True)), "id": f"u{who[i]}"},
            "label": int(y[i]),
        }
        for i in range(n)
    ]


def decode(schema: SchemaConfig, events: list[dict]) -> tuple[np.ndarray, np.ndarray, float]:
    recs = [Record("t", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
    dec = EventDecoder(schema)
    t0 = time.perf_counter()
    Xs, ys = [], []
    for i in range(0, len(recs), 2000):
        ok, _ = dec.decode_many(recs[i : i + 2000])
        Xs.append(ok.X)
        ys.append(ok.y)
    return np.concatenate(Xs), np.concatenate(ys), len(recs) / (time.perf_counter() - t0)


def learn(schema: SchemaConfig, X, y, batch: int, track_rss: bool):
    lrn = Learner(schema, ModelConfig(), LearningConfig(), "cpu")
    rss = []
    errs = 0.0
    t0 = time.perf_counter()
    tenth = max(len(y) // 10 // batch * batch, batch)
    for i in range(0, len(y), batch):
        errs += float(lrn.learn_many(X[i : i + batch], y[i : i + batch]).errors.sum())
        lrn.replay()
        if track_rss and i % tenth == 0:
            rss.append(rss_mb())
    rate = len(y) / (time.perf_counter() - t0)
    return lrn, rate, 1 - errs / len(y), rss


def served_us(schema: SchemaConfig, lrn: Learner, event: dict, repeats: int = 3000):
    ref = SnapshotRef()
    snap = ref.publish(Draft("binary", (0, 1), schema.feature_names, lrn.export(), 0, {}))
    assert snap is not None
    handler = RequestHandler(ref, schema)
    row = np.asarray([handler.parser.parse(event)[0]], np.float32)
    req = {"op": "predict", "features": event}
    out = {}
    for name, call in (
        ("predict_many", lambda: snap.predict_many(row)),
        ("handle", lambda: handler.handle(req)),
    ):
        for _ in range(200):
            call()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times) * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(1)
    events = stream(a.events, a.ids)
    typed = SchemaConfig(task="binary", features=TYPED)
    plain = SchemaConfig(task="binary", features=NUMS)
    Xt, yt, dec_t = decode(typed, events)
    Xn, yn, dec_n = decode(plain, events)
    print(f"{a.events} events, {a.ids} distinct ids, batch {a.batch}, 1 torch thread")
    print(f"distinct ids seen: {len({e['features']['id'] for e in events})}")
    print(f"decode events/s   numeric {dec_n:,.0f}   typed {dec_t:,.0f}")
    ln, rate_n, acc_n, _ = learn(plain, Xn, yn, a.batch, False)
    lt, rate_t, acc_t, rss = learn(typed, Xt, yt, a.batch, True)
    print("| stream | learn examples/s | prequential accuracy |")
    print("|---|---|---|")
    print(f"| id dropped (8 numbers) | {rate_n:,.0f} | {acc_n:.4f} |")
    print(f"| + id, category of 2^18 buckets | {rate_t:,.0f} | {acc_t:.4f} |")
    print(f"typed / numeric speed: {rate_t / rate_n:.2f}")
    print("RSS MB at each tenth of the typed run: " + ", ".join(f"{r:.0f}" for r in rss))
    if len(rss) > 2:
        print(f"RSS growth from the first tenth to the end: {100 * (rss[-1] / rss[1] - 1):.1f}%")
    ev_t = events[0]["features"]
    ev_n = {k: v for k, v in ev_t.items() if k != "id"}
    wide = SchemaConfig(task="binary", features=(*NUMS, "x8"))  # the same width: 9 inputs
    lw, *_ = learn(wide, np.c_[Xn, Xn[:, :1]][:2000], yn[:2000], a.batch, False)
    s_t = served_us(typed, lt, ev_t)
    s_n = served_us(wide, lw, {**ev_n, "x8": 0.5})
    print("| served, batch 1 | numeric, 9 numbers (us) | typed, 8 numbers + id (us) | ratio |")
    print("|---|---|---|---|")
    for k in ("predict_many", "handle"):
        print(f"| {k} | {s_n[k]:.1f} | {s_t[k]:.1f} | {s_t[k] / s_n[k]:.2f} |")


if __name__ == "__main__":
    main()
