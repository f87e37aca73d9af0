"""The anchors of bench/quality.py --typed, on raw events (dicts of numbers and strings, a
missing value absent), test-then-train one example at a time; each run returns its time and
per-event correctness.

- river LR: numbers standardised, strings one-hot encoded (``OneHotEncoder``, one weight per
  value seen), ``LogisticRegression``.
- river HATC and ARF: the dicts as they are (river's trees split on a string as a nominal
  attribute; an absent value follows the branch most examples took).
- VW: numbers as ``name:value``, strings as ``name=value`` (hashed by VW), absent ones left out.
"""

from __future__ import annotations

import numbers
import time

import numpy as np
from _anchors import run_capymoa_model
from river import compose, forest, linear_model, preprocessing, tree


def typed_river_systems(seed: int = 7):
    nums = compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    cats = compose.SelectType(str) | preprocessing.OneHotEncoder()
    return [
        ("river LR, one-hot", (nums + cats) | linear_model.LogisticRegression()),
        ("river HATC", tree.HoeffdingAdaptiveTreeClassifier(seed=seed)),
        ("river ARF", forest.ARFClassifier(seed=seed)),
    ]


def _vw_line(row: dict) -> str:
    parts = []
    for k, v in row.items():
        if isinstance(v, str):
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}:{v:.6g}")
    return " ".join(parts)


def run_vw_rows(rows: list[dict], y: np.ndarray):
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return None
    ws = Workspace("--loss_function logistic --link logistic --quiet")
    feats = [_vw_line(r) for r in rows]
    correct = np.zeros(len(y), bool)
    t0 = time.perf_counter()
    for i, (f, t) in enumerate(zip(feats, y.tolist(), strict=True)):
        correct[i] = (ws.predict(f"| {f}") > 0.5) == (t == 1)
        ws.learn(f"{1 if t == 1 else -1} | {f}")
    dt = time.perf_counter() - t0
    ws.finish()
    return dt, correct


def run_capymoa_rows(kind: str, rows: list[dict], y: np.ndarray, features: dict, seed: int = 7):
    """CapyMOA's ``ARF`` or ``SRP`` (MOA's AdaptiveRandomForest, StreamingRandomPatches, their
    defaults) with each string feature a nominal attribute. MOA declares a nominal attribute's
    values up front: they are the values the stream holds (which favours MOA slightly). A
    missing value is NaN, MOA's missing value. None when CapyMOA is not installed."""
    try:
        from capymoa.classifier import AdaptiveRandomForestClassifier, StreamingRandomPatches
        from capymoa.stream import Schema
    except ImportError:
        return None
    names = list(features)
    nominal = {
        k: sorted({r[k] for r in rows if k in r})
        for k, spec in features.items()
        if (spec if isinstance(spec, str) else spec["type"]) == "category"
    }
    index = {k: {v: i for i, v in enumerate(vs)} for k, vs in nominal.items()}
    schema = Schema.from_custom(
        features=[*names, "class"], target="class", categories={**nominal, "class": ["0", "1"]}
    )
    make = AdaptiveRandomForestClassifier if kind == "ARF" else StreamingRandomPatches
    model = make(schema=schema, random_seed=seed)
    xs = np.full((len(rows), len(names)), np.nan)
    for i, r in enumerate(rows):
        for j, k in enumerate(names):
            if k in r:
                xs[i, j] = index[k][r[k]] if k in index else r[k]
    dt, predictions = run_capymoa_model(model, schema, xs, y)
    return dt, predictions == y
