"""A schema of categories only (no numeric inputs) learns: the first layer must not start dead."""

from __future__ import annotations

import numpy as np

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.config_schema import FeatureLayout
from learnd.daemon.events.typed import category_key
from learnd.daemon.learning.learner import Learner


def test_a_learner_with_only_category_features_learns_them():
    schema = SchemaConfig(task="binary", features={"colour": "category", "size": "category"})
    assert isinstance(schema.layout, FeatureLayout) and schema.layout.n_numeric == 0
    lrn = Learner(schema, ModelConfig(), LearningConfig(), "cpu")
    rng = np.random.default_rng(0)
    colours, sizes = ["red", "green", "blue"], ["small", "large"]
    correct = []
    for _ in range(60):
        c = rng.integers(3, size=32)
        s = rng.integers(2, size=32)
        X = np.c_[
            [category_key(colours[i]) for i in c], [category_key(sizes[i]) for i in s]
        ].astype(np.float32)
        y = ((c == 0) ^ (s == 1)).astype(np.float32)  # needs both features
        correct.append(lrn.learn_many(X, y).errors == 0)
    assert np.mean(correct[-20:]) > 0.85  # a dead first layer stays near 0.5
