"""bench/quality.py --typed: the typed streams (bench/_typed_streams.py) with raw strings and
missing values, every system in one run.

learnd reads the events as the daemon does: each event (``{"features": {...}, "label": y}``,
a missing value absent) is decoded by :class:`EventDecoder` against the stream's
``[schema.features]`` table, and the encoded rows are learned by the default config through
``Pipeline.learn_arrays``, keeping up (rehearsal) and behind (none), as bench/quality.py does
for the numeric streams. Its examples/s count learning, not decoding (decoding is timed apart
and printed). The others take the same events as dicts (bench/_typed_anchors.py); the tree ensembles (river
ARF, CapyMOA) skip a stream with a category of more than ``WIDE`` values (the click ids: ARF
learned them at 45 events/s, CapyMOA's slower still).
"""

from __future__ import annotations

import time

import numpy as np
import orjson
from _anchors import run_river_rows
from _progress import bar, say
from _typed_anchors import run_capymoa_rows, run_vw_rows, typed_river_systems
from _typed_streams import typed_streams

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.decoder import EventDecoder
from learnd.daemon.events.record import Record

WIDE = 1000  # tree ensembles skip a stream whose category holds more values (ARF: < 50 events/s)
HEADER = [
    "learnd, keeping up",
    "learnd, behind",
    "river LR, one-hot",
    "river HATC",
    "river ARF",
    "VW, strings hashed",
    "CapyMOA ARF",
    "CapyMOA SRP",
]


def encode(features: dict, rows: list[dict], y: np.ndarray):
    """The rows as learnd's decoder encodes them, and its events/s."""
    schema = SchemaConfig(task="binary", features=features)
    dec = EventDecoder(schema)
    recs = [
        Record("t", 0, i, orjson.dumps({"features": r, "label": int(t)}))
        for i, (r, t) in enumerate(zip(rows, y.tolist(), strict=True))
    ]
    t0 = time.perf_counter()
    Xs, ys = [], []
    for i in range(0, len(recs), 2000):
        ok, bad = dec.decode_many(recs[i : i + 2000])
        assert not bad, bad[:1]
        Xs.append(ok.X)
        ys.append(ok.y)
    rate = len(recs) / (time.perf_counter() - t0)
    return np.concatenate(Xs), np.concatenate(ys).astype(np.int64), rate


def compare_typed(n: int, only, run_learnd_recorded) -> None:
    print(f"typed streams {n:,} events, seed 7, 1 torch thread; accuracy / examples/s\n")
    print("| stream | " + " | ".join(HEADER) + " | best other - 0.5 | met |")
    print("|---|" + "---|" * (len(HEADER) + 2))
    data = typed_streams(n, only)
    progress = bar(len(data) * len(HEADER), "systems x typed streams")
    notes = []
    for s in data:
        X, y, dec_rate = encode(s.features, s.rows, s.y)
        assert (y == s.y).all()
        notes.append(f"{s.name}: decoded at {dec_rate:,.0f} events/s, {X.shape[1]} columns")
        accs, cells = {}, []
        for behind, head in ((False, HEADER[0]), (True, HEADER[1])):
            progress.set_postfix_str(f"{s.name[:14]}: {head}")
            dt, correct, _ = run_learnd_recorded(X, y, [0, 1], behind=behind, features=s.features)
            accs[head] = float(correct.mean())
            cells.append(f"{correct.mean():.4f} / {_rate(len(y), dt)}")
            progress.update()
        cats = [
            k for k, v in s.features.items() if (v if isinstance(v, str) else v["type"]) != "number"
        ]
        wide = max((len({r.get(k) for r in s.rows}) for k in cats), default=0) > WIDE
        for system, model in typed_river_systems():
            progress.set_postfix_str(f"{s.name[:14]}: {system}")
            if wide and system.endswith("ARF"):
                cells.append(f"skipped (> {WIDE:,} values)")
                progress.update()
                continue
            with bar(len(y), system, "ev") as events:
                dt, correct = run_river_rows(model, s.rows, s.y, events)
            accs[system] = float(correct.mean())
            cells.append(f"{correct.mean():.4f} / {_rate(len(y), dt)}")
            progress.update()
        progress.set_postfix_str(f"{s.name[:14]}: VW")
        runs = [(HEADER[5], run_vw_rows(s.rows, s.y))]
        progress.update()
        for kind in ("ARF", "SRP"):
            progress.set_postfix_str(f"{s.name[:14]}: CapyMOA {kind}")
            run = None if wide else run_capymoa_rows(kind, s.rows, s.y, s.features)
            runs.append((f"CapyMOA {kind}", "skipped" if wide else run))
            progress.update()
        for head, run in runs:
            if isinstance(run, str):
                cells.append(f"skipped (> {WIDE:,} values)")
            elif run is None:
                cells.append("not installed")
            else:
                accs[head] = float(run[1].mean())
                cells.append(f"{run[1].mean():.4f} / {_rate(len(y), run[0])}")
        others = {k: v for k, v in accs.items() if not k.startswith("learnd")}
        best = max(others, key=others.__getitem__)
        line = others[best] - 0.005
        met = ", ".join(
            f"{head.split(', ')[1]} {'yes' if accs[head] >= line else 'no'}" for head in HEADER[:2]
        )
        say(f"| {s.name} ({len(y):,}) | " + " | ".join(cells) + f" | {best}: {line:.4f} | {met} |")
    progress.close()
    print()
    for note in notes:
        print(note)


def _rate(n, dt):
    r = n / dt
    return f"{r / 1000:,.0f}k" if r >= 10_000 else f"{r / 1000:,.1f}k"
