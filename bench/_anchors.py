"""The anchors learnd is measured against in bench/quality.py: river's LogisticRegression
(standardised), HoeffdingAdaptiveTreeClassifier and ARFClassifier, Vowpal Wabbit, and CapyMOA's
ARF, StreamingRandomPatches and HoeffdingAdaptiveTree, each test-then-train one example at a
time. Each run returns its time and per-event correctness (classification) or absolute error
(regression). On regression streams: river's LinearRegression (standardised),
HoeffdingAdaptiveTreeRegressor and ARFRegressor, VW with squared loss, and CapyMOA's
AdaptiveRandomForestRegressor, SOKNL (SRP's regression counterpart) and FIMTDD (the Hoeffding
regression tree with change detection, the nearest to HAT)."""

from __future__ import annotations

import time

import numpy as np
from river import forest, linear_model, multiclass, preprocessing, tree

CHUNK = 1000  # events between progress updates


def river_systems(k, seed=7):
    """river's three systems for a ``k``-class stream, named; ``seed`` for HATC and ARF (river's
    LogisticRegression draws nothing at random)."""
    lr = preprocessing.StandardScaler() | (
        linear_model.LogisticRegression()
        if k == 2
        else multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
    )
    return [
        ("river LR", lr),
        ("river HATC", tree.HoeffdingAdaptiveTreeClassifier(seed=seed)),
        ("river ARF", forest.ARFClassifier(seed=seed)),
    ]


def river_regressors(seed=7):
    """river's three regression systems, named (LinearRegression draws nothing at random)."""
    return [
        ("river LR", preprocessing.StandardScaler() | linear_model.LinearRegression()),
        ("river HATC", tree.HoeffdingAdaptiveTreeRegressor(seed=seed)),
        ("river ARF", forest.ARFRegressor(seed=seed)),
    ]


def run_river_regression(model, X, y):
    """A river regressor prequentially: (seconds learning, per-event absolute error)."""
    rows = _rows(X)
    targets = y.tolist()
    errors = np.zeros(len(y))
    t0 = time.perf_counter()
    for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
        errors[i] = abs(model.predict_one(r) - t)
        model.learn_one(r, t)
    return time.perf_counter() - t0, errors


CAPYMOA = ("CapyMOA ARF", "CapyMOA SRP", "CapyMOA HAT")


def capymoa_systems(schema, regression, seed=7):
    """CapyMOA's three systems (MOA's defaults) for ``schema``, named as ``CAPYMOA``."""
    if regression:
        from capymoa.regressor import FIMTDD, SOKNL, AdaptiveRandomForestRegressor

        makes = (AdaptiveRandomForestRegressor, SOKNL, FIMTDD)
    else:
        from capymoa.classifier import (
            AdaptiveRandomForestClassifier,
            HoeffdingAdaptiveTree,
            StreamingRandomPatches,
        )

        makes = (AdaptiveRandomForestClassifier, StreamingRandomPatches, HoeffdingAdaptiveTree)
    out = []
    for name, make in zip(CAPYMOA, makes, strict=True):
        seeded = make is not FIMTDD if regression else make is not HoeffdingAdaptiveTree
        out.append((name, make(schema=schema, random_seed=seed) if seeded else make(schema=schema)))
    return out


def run_capymoa(X, y, labels, seed=7):
    """CapyMOA's three systems on a numeric stream (``labels`` None: regression), named:
    ``(name, seconds, correct or absolute error)``; None when CapyMOA is not installed."""
    try:
        from capymoa.stream import Schema
    except ImportError:
        return None
    names = _names(X)
    regression = labels is None
    cats = None if regression else {"class": [str(i) for i in range(len(labels))]}
    schema = Schema.from_custom(features=[*names, "class"], target="class", categories=cats)
    xs = X.astype(np.float64)
    out = []
    for name, model in capymoa_systems(schema, regression, seed):
        dt, outputs = run_capymoa_model(model, schema, xs, y)
        out.append((name, dt, np.abs(outputs - y) if regression else outputs == y))
    return out


def run_capymoa_model(model, schema, xs, y):
    """A CapyMOA learner prequentially over float rows: (seconds, its predictions)."""
    from capymoa.core import LabeledInstance, RegressionInstance

    regression = schema.is_regression()
    make = RegressionInstance.from_array if regression else LabeledInstance.from_array
    targets = y.astype(np.float64).tolist() if regression else y.tolist()
    predictions = np.zeros(len(y))
    t0 = time.perf_counter()
    for i in range(len(y)):
        inst = make(schema, xs[i], targets[i])
        p = model.predict(inst)
        predictions[i] = np.nan if p is None else p
        model.train(inst)
    return time.perf_counter() - t0, predictions


def run_river(model, X, y, progress=None):
    """``progress``: a bar advanced every ``CHUNK`` events (its time is not counted)."""
    rows = _rows(X)
    return run_river_rows(model, rows, y, progress)


def run_river_rows(model, rows: list[dict], y: np.ndarray, progress=None):
    """A river model prequentially over feature dicts: (seconds learning, per-event correct)."""
    labels = y.tolist()
    correct = np.zeros(len(y), bool)
    elapsed = 0.0
    for start in range(0, len(y), CHUNK):
        t0 = time.perf_counter()
        for i in range(start, min(start + CHUNK, len(y))):
            correct[i] = model.predict_one(rows[i]) == labels[i]
            model.learn_one(rows[i], labels[i])
        elapsed += time.perf_counter() - t0
        if progress is not None:
            progress.update(min(CHUNK, len(y) - start))
    return elapsed, correct


def run_vw(X, y, n_classes):
    """``n_classes`` None: regression with squared loss, per-event absolute error."""
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return None
    if n_classes is None:
        return _run_vw_regression(Workspace("--loss_function squared --quiet"), X, y)
    if n_classes == 2:
        ws = Workspace("--loss_function logistic --link logistic --quiet")
    else:
        ws = Workspace(f"--oaa {n_classes} --loss_function logistic --quiet")
    feats = _vw_features(X)
    correct = np.zeros(len(y), bool)
    t0 = time.perf_counter()
    for i, (f, t) in enumerate(zip(feats, y.tolist(), strict=True)):
        if n_classes == 2:
            correct[i] = (ws.predict(f"| {f}") > 0.5) == (t == 1)
            ws.learn(f"{1 if t == 1 else -1} | {f}")
        else:
            correct[i] = ws.predict(f"| {f}") == t + 1
            ws.learn(f"{t + 1} | {f}")
    dt = time.perf_counter() - t0
    ws.finish()
    return dt, correct


def _run_vw_regression(ws, X, y):
    feats = _vw_features(X)
    errors = np.zeros(len(y))
    t0 = time.perf_counter()
    for i, (f, t) in enumerate(zip(feats, y.tolist(), strict=True)):
        errors[i] = abs(ws.predict(f"| {f}") - t)
        ws.learn(f"{t:.6g} | {f}")
    dt = time.perf_counter() - t0
    ws.finish()
    return dt, errors


def _names(X) -> list[str]:
    return [f"x{i}" for i in range(X.shape[1])]


def _rows(X) -> list[dict]:
    """A numeric stream's rows as river's feature dicts."""
    names = _names(X)
    return [dict(zip(names, map(float, r), strict=True)) for r in X]


def _vw_features(X) -> list[str]:
    """A numeric stream's rows in VW's text format (after the namespace bar)."""
    return [" ".join(f"f{j}:{v:.6g}" for j, v in enumerate(r)) for r in X]
