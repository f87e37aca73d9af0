from __future__ import annotations

import numpy as np

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.normalizer import Standardizer
from learnd.daemon.serving.snapshot import Draft, SnapshotRef


def test_a_column_constant_so_far_standardises_to_zero_until_it_varies():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(5, 2, 1000), np.zeros(1000), np.full(1000, 0.1)])
    s = Standardizer(3)
    for i in range(0, 1000, 32):
        s.update_many(X[i : i + 32])
    _, inv = s.scale()
    assert inv[0] > 0 and inv[1] == 0 and inv[2] == 0  # 0.1's running sums are not exact
    out = s.transform(np.array([[5.0, 1.0, 7.0]]))
    assert out[0, 1] == 0 and out[0, 2] == 0
    # once the column varies it is standardised like any other
    s.update_many(np.array([[5.0, 1.0, 0.1]]))
    assert 0 < s.transform(np.array([[5.0, 1.0, 0.1]]))[0, 1] < 100


def test_a_feature_constant_while_learning_does_not_swing_served_predictions(device):
    """A feature that never varied in training carries no scale: a served query (and the next
    batch's test-then-train prediction) ignores its value instead of scaling it by 1/sqrt(eps)."""
    events = list(DriftingSEA(seed=3, switch_every=100_000).take(3000))
    X = np.array([[e["features"][k] for k in FEATURES] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    X[:, 2] = 4.0  # SEA's third feature is noise: here it stays 4 throughout training
    lrn = Learner(
        SchemaConfig(task="binary", features=FEATURES), ModelConfig(), LearningConfig(), device
    )
    for i in range(0, 3000, 32):
        lrn.learn_many(X[i : i + 32], y[i : i + 32])
    snap = SnapshotRef().publish(Draft("binary", (0, 1), FEATURES, lrn.export(), 3000, {}))
    query = X[:200].copy()
    query[:, 2] = 9.0
    np.testing.assert_array_equal(snap.predict_many(query), snap.predict_many(X[:200]))
    np.testing.assert_array_equal(lrn.predict_many(query), lrn.predict_many(X[:200]))
