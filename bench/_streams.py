"""bench/quality.py's seven seeded streams: three synthetic ones with known drift and four real
data sets that river ships, as arrays (features, class indices, labels, switch points)."""

from __future__ import annotations

import itertools

import numpy as np
from river import datasets
from river.datasets import synth


def _arrays(pairs, classes=None):
    xs, ys = [], []
    keys = None
    for x, y in pairs:
        if keys is None:
            keys = sorted(x)
        xs.append([float(x[k]) for k in keys])
        ys.append(y)
    X = np.nan_to_num(np.array(xs, np.float32))
    labels = sorted(set(ys), key=str) if classes is None else classes
    index = {c: i for i, c in enumerate(labels)}
    return X, np.array([index[y] for y in ys], np.int64), labels


def switching(make, n, parts):
    """``n`` events from generators ``make(k)`` for k in ``parts``, switching abruptly."""
    per = n // len(parts)
    pairs = itertools.chain.from_iterable(itertools.islice(make(k), per) for k in parts)
    return pairs, [per * i for i in range(1, len(parts))]


def sea(n, seed=7):
    pairs, sw = switching(lambda v: synth.SEA(variant=v, seed=seed, noise=0.05), n, [0, 1, 2, 3])
    return ("SEA, 3 abrupt switches", *_arrays(pairs), sw)


def streams(n, quick, only=()):
    """The seven streams, or those whose names start with one of ``only`` (any case)."""
    out = [sea(n)]
    hp = synth.Hyperplane(seed=7, n_features=10, mag_change=0.001)
    out.append(("Hyperplane(10, mag_change .001)", *_arrays(hp.take(n)), []))
    pairs, sw = switching(lambda f: synth.Agrawal(classification_function=f, seed=7), n, [0, 2, 5])
    out.append(("Agrawal 0->2->5", *_arrays(pairs), sw))
    for name, ds in (
        ("Phishing", datasets.Phishing()),
        ("Bananas", datasets.Bananas()),
        ("ImageSegments (7 classes)", datasets.ImageSegments()),
        ("Shuttle", datasets.Shuttle()),
    ):
        out.append((f"{name}", *_arrays(iter(ds)), []))
    if only:
        out = [s for s in out if s[0].lower().startswith(tuple(o.lower() for o in only))]
        if not out:
            raise SystemExit(f"--streams {','.join(only)} names none of the streams")
    return out
