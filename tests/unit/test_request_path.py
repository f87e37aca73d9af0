"""The request path's shortcuts give what the general path gives: a plainly valid numeric row
skips the parser (every other row's answer is the parser's), and one binary row's
probabilities are the same float32 arithmetic as a batch's, bit for bit."""

from __future__ import annotations

import math

import numpy as np

from learnd.daemon.config import SchemaConfig
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

NAMES = ("a", "b", "c")


def _ref(task: str = "binary", classes: tuple = (0, 1), k: int = 1) -> SnapshotRef:
    rng = np.random.default_rng(5)
    ws = (
        rng.standard_normal((3, 8)).astype(np.float32),
        rng.standard_normal((8, k)).astype(np.float32),
    )
    bs = (rng.standard_normal(8).astype(np.float32), rng.standard_normal(k).astype(np.float32))
    w = DenseWeights(
        ws, bs, "relu", np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32), 1.0, 3.0
    )
    ref = SnapshotRef()
    ref.publish(Draft(task, classes, NAMES, w, 0, {}))
    return ref


ROWS = [
    [1, 2.5, -3],
    {"a": 1.0, "b": 2.0, "c": 3.0, "extra": "ignored"},
    [1.0, 2.0],
    [1.0, 2.0, 3.0, 4.0],
    [True, 2.0, 3.0],
    [1.0, "2", 3.0],
    [1.0, None, 3.0],
    [1.0, [2.0], 3.0],
    [math.nan, 2.0, 3.0],
    [math.inf, 2.0, 3.0],
    [-math.inf, 2.0, 3.0],
    [1e15, -1e15, 3.0],
    [1e15 * (1 + 1e-15), 2.0, 3.0],
    [10**16, 2.0, 3.0],
    {"a": 1.0, "b": 2.0},
    {"a": 1.0, "b": None, "c": 3.0},
    {"a": 1.0, "b": False, "c": 3.0},
    {"a": 1.0, "b": math.nan, "c": 3.0},
    "1,2,3",
    None,
    (1.0, 2.0, 3.0),
]


def test_quick_rows_answer_as_the_parser_does():
    for task, classes, k in (
        ("binary", (0, 1), 1),
        ("multiclass", ("x", "y", "z"), 3),
        ("regression", (), 1),
    ):
        ref = _ref(task, classes, k)
        schema = (
            SchemaConfig(task=task, features=NAMES, classes=classes or None)
            if task == "multiclass"
            else SchemaConfig(task=task, features=NAMES)
        )
        quick, general = RequestHandler(ref, schema), RequestHandler(ref, schema)
        general._quick = False
        reqs = [{"op": "predict", "features": r, "id": i} for i, r in enumerate(ROWS)]
        assert quick.handle_many(reqs) == general.handle_many(reqs)
        for r in ROWS:
            req = {"op": "predict_many", "instances": [r, [1.0, 2.0, 3.0]]}
            assert quick.handle(req) == general.handle(req)
            assert quick.handle({"features": r}) == general.handle({"features": r})


def test_one_binary_row_is_bit_for_bit_a_batch_row():
    # Weights and inputs on a grid of powers of two: every matmul is exact at any batch size
    # (BLAS may sum in another order), so any difference would come from the link.
    rng = np.random.default_rng(2)
    ws = (
        rng.integers(-2, 3, (3, 8)).astype(np.float32),
        (rng.integers(-8, 9, (8, 1)) / 64).astype(np.float32),
    )
    bs = (rng.integers(-2, 3, 8).astype(np.float32), np.zeros(1, np.float32))
    w = DenseWeights(
        ws, bs, "relu", np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32), 0.0, 1.0
    )
    ref = SnapshotRef()
    snap = ref.publish(Draft("binary", (0, 1), NAMES, w, 0, {}))
    assert snap is not None
    X = (rng.integers(-40, 41, (2000, 3)) / 4).astype(np.float32)
    batch = snap.predict_many(X)
    ones = np.concatenate([snap.predict_many(X[i : i + 1]) for i in range(len(X))])
    assert len(np.unique(batch[:, 1])) > 100  # the link is exercised, not saturated
    assert ones.dtype == batch.dtype == np.float32
    assert ones.tobytes() == batch.tobytes()


def test_a_batch_s_scores_are_python_s_rounding_of_the_probabilities():
    ref = _ref("multiclass", ("x", "y", "z"), 3)
    snap = ref.current
    assert snap is not None
    schema = SchemaConfig(task="multiclass", features=NAMES, classes=("x", "y", "z"))
    X = np.random.default_rng(3).normal(0, 2, (3000, 3)).astype(np.float32)
    answer = RequestHandler(ref, schema).handle({"op": "predict_many", "instances": X.tolist()})
    probs = snap.predict_many(X)
    want = [{c: round(float(p), 6) for c, p in zip("xyz", row, strict=True)} for row in probs]
    assert [a["scores"] for a in answer["predictions"]] == want
    assert [a["prediction"] for a in answer["predictions"]] == ["xyz"[k] for k in probs.argmax(1)]
