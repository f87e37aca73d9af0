"""The anchors learnd is measured against in bench/quality.py: river's LogisticRegression
(standardised), HoeffdingAdaptiveTreeClassifier and ARFClassifier, and Vowpal Wabbit, each
test-then-train one example at a time. Each run returns its time and per-event correctness."""

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


def run_river(model, X, y, progress=None):
    """``progress``: a bar advanced every ``CHUNK`` events (its time is not counted)."""
    names = [f"x{i}" for i in range(X.shape[1])]
    rows = [dict(zip(names, map(float, r), strict=True)) for r in X]
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
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        return None
    if n_classes == 2:
        ws = Workspace("--loss_function logistic --link logistic --quiet")
    else:
        ws = Workspace(f"--oaa {n_classes} --loss_function logistic --quiet")
    feats = [" ".join(f"f{j}:{v:.6g}" for j, v in enumerate(r)) for r in X]
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
