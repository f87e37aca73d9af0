"""bench/quality.py --typed: four seeded binary streams of events as they come, with string
categories and missing values, as rows of raw values (a dict per event; a missing value is
absent), labels, switch points and learnd's ``[schema.features]`` table for them.

- STAGGER 0->1->2: three string categories (size, colour, shape), abrupt switches.
- Agrawal 0->2->5: six numbers, and ``elevel``, ``car`` and ``zipcode`` as strings.
- Agrawal with gaps: the same stream, each value missing with probability 0.1, and in the
  middle fifth of every 5,000 events ``salary`` and ``age`` missing throughout (a burst).
- Clicks: 4 context numbers, a ``site`` of 50 and an ``id`` of 10^6 (Zipf(1.1)-drawn: about
  half the events carry an id seen before); click logit = id bias + site bias + <id
  embedding, context>, the id embeddings rotating a quarter turn over the stream (gradual
  drift).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from river.datasets import synth


class TypedStream(NamedTuple):
    name: str
    rows: list[dict]  # raw values; a missing value is absent
    y: np.ndarray  # 0 or 1
    switches: list[int]
    features: dict  # learnd's [schema.features] table


AGRAWAL_NUMBERS = ("salary", "commission", "age", "hvalue", "hyears", "loan")
AGRAWAL_CATEGORIES = ("elevel", "car", "zipcode")


def _switching(make, n, parts):
    per = n // len(parts)
    pairs = itertools.chain.from_iterable(itertools.islice(make(k), per) for k in parts)
    return list(pairs), [per * i for i in range(1, len(parts))]


def stagger(n: int, seed: int = 7) -> TypedStream:
    words = {
        "size": ("small", "medium", "large"),
        "color": ("red", "green", "blue"),
        "shape": ("circle", "square", "triangle"),
    }
    pairs, sw = _switching(
        lambda f: synth.STAGGER(classification_function=f, seed=seed, balance_classes=False),
        n,
        [0, 1, 2],
    )
    rows = [{k: words[k][int(v)] for k, v in x.items()} for x, _ in pairs]
    y = np.array([int(t) for _, t in pairs], np.int64)
    return TypedStream("STAGGER 0->1->2", rows, y, sw, dict.fromkeys(words, "category"))


def _agrawal_rows(n: int, seed: int):
    pairs, sw = _switching(
        lambda f: synth.Agrawal(classification_function=f, seed=seed), n, [0, 2, 5]
    )
    rows = []
    for x, _ in pairs:
        row = {k: float(x[k]) for k in AGRAWAL_NUMBERS}
        row |= {k: f"{k[0]}{int(x[k])}" for k in AGRAWAL_CATEGORIES}
        rows.append(row)
    return rows, np.array([int(t) for _, t in pairs], np.int64), sw


def agrawal(n: int, seed: int = 7) -> TypedStream:
    rows, y, sw = _agrawal_rows(n, seed)
    features = {**dict.fromkeys(AGRAWAL_NUMBERS, "number")}
    features |= dict.fromkeys(AGRAWAL_CATEGORIES, "category")
    return TypedStream("Agrawal 0->2->5, categories as strings", rows, y, sw, features)


def agrawal_gaps(n: int, seed: int = 7, p: float = 0.1) -> TypedStream:
    rows, y, sw = _agrawal_rows(n, seed)
    rng = np.random.default_rng(seed)
    gaps = rng.random((n, len(rows[0]))) < p
    for i, row in enumerate(rows):
        burst = 2000 <= i % 5000 < 3000
        for j, k in enumerate(list(row)):
            if gaps[i, j] or (burst and k in ("salary", "age")):
                del row[k]
    features = {k: {"type": "number", "missing": "impute"} for k in AGRAWAL_NUMBERS}
    features |= dict.fromkeys(AGRAWAL_CATEGORIES, "category")
    return TypedStream("Agrawal, 10% missing + bursts", rows, y, sw, features)


def clicks(n: int, seed: int = 7, ids: int = 1_000_000, d: int = 4) -> TypedStream:
    rng = np.random.default_rng(seed)
    who = (rng.zipf(1.1, n) - 1) % ids
    names = rng.permutation(ids)  # popular ids are not the small numbers
    seen, inverse = np.unique(who, return_inverse=True)
    a = rng.normal(size=(len(seen), d))
    b = rng.normal(size=(len(seen), d))
    bias = rng.normal(0.0, 1.0, len(seen))
    sites = rng.integers(50, size=n)
    site_bias = rng.normal(0.0, 0.7, 50)
    X = rng.normal(size=(n, d))
    turn = (np.pi / 2) * np.arange(n) / n  # the embeddings rotate a quarter turn
    emb = np.cos(turn)[:, None] * a[inverse] + np.sin(turn)[:, None] * b[inverse]
    logit = bias[inverse] + site_bias[sites] + (emb * X).sum(1) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    rows = [
        {
            **{f"c{j}": float(X[i, j]) for j in range(d)},
            "site": f"s{sites[i]}",
            "id": f"u{names[who[i]]}",
        }
        for i in range(n)
    ]
    features = {**{f"c{j}": "number" for j in range(d)}, "site": "category"}
    features["id"] = {"type": "category", "buckets": 262144}
    name = f"Clicks, {len(seen):,} distinct of 10^6 ids, drifting"
    return TypedStream(name, rows, y, [], features)


def typed_streams(n: int, only=()) -> list[TypedStream]:
    out = [stagger(n), agrawal(n), agrawal_gaps(n), clicks(n)]
    if only:
        out = [s for s in out if s.name.lower().startswith(tuple(o.lower() for o in only))]
        if not out:
            raise SystemExit(f"--streams {','.join(only)} names none of the typed streams")
    return out
