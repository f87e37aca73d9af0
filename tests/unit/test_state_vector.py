"""daemon/learning/state_vector.py: gather/scatter exactly, pool standardisers exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.normalizer import Standardizer
from learnd.daemon.learning.state_vector import (
    counts_contribution,
    gather,
    layout,
    pooled,
    pooled_means,
    scatter,
    spread_contribution,
)


def _learner(task="binary", optimizer="adam", decay=0.8, n_features=3):
    schema = SchemaConfig(task=task, n_features=n_features)
    learning = LearningConfig(
        optimizer=optimizer, average_decay=decay, linear_member={"enabled": False}
    )
    return Learner(schema, ModelConfig(hidden=(8,)), learning, device="cpu")


def _data(seed, n=640, d=3, loc=5.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(loc, 2.0, size=(n, d)).astype(np.float32)
    y = (X[:, 0] > loc).astype(np.float32)
    return X, y


def _learn(lrn, X, y):
    for i in range(0, len(y), 32):
        lrn.learn_many(X[i : i + 32], y[i : i + 32])
        lrn.replay(2)


def _pool(vectors, base, lay):
    """One round in one process: the mean of the contributions, twice."""
    n = len(vectors)
    counts = torch.stack([counts_contribution(v, base, lay, n) for v in vectors]).sum(0) / n
    means = pooled_means(counts, base, lay)
    spread = torch.stack([spread_contribution(v, base, lay, means, n) for v in vectors]).sum(0)
    return pooled(spread / n, means, lay)


@pytest.mark.parametrize(
    ("task", "optimizer", "decay"),
    [
        ("binary", "adam", 0.8),
        ("binary", "adamw", 0.0),
        ("multiclass", "adagrad", 0.8),
        ("regression", "sgd", 0.8),
    ],
)
def test_scatter_of_gather_is_the_same_state_bit_for_bit(task, optimizer, decay):
    X, y = _data(0)
    if task == "multiclass":
        y = (X[:, 0] > 5).astype(np.int64) + (X[:, 1] > 5)
        schema = SchemaConfig(task=task, n_features=3, classes=["a", "b", "c"])
        src = Learner(
            schema,
            ModelConfig(hidden=(8,)),
            LearningConfig(optimizer=optimizer, linear_member={"enabled": False}),
        )
        dst = Learner(
            schema,
            ModelConfig(hidden=(8,), seed=9),
            LearningConfig(optimizer=optimizer, linear_member={"enabled": False}),
        )
    else:
        src, dst = _learner(task, optimizer, decay), _learner(task, optimizer, decay)
        dst.net[0].weight.data.fill_(3.0)  # something else to overwrite
    if task == "regression":
        y = X[:, 0] * 10 + 100
    _learn(src, X, y)
    v = gather(src)
    assert v.dtype == torch.float64 and v.shape == (layout(src).size,)
    scatter(dst, v)
    assert torch.equal(gather(dst), v)
    assert torch.equal(dst.flat_weights, src.flat_weights)
    if decay:
        assert torch.equal(dst.average.buffer, src.average.buffer)
    for key in layout(src).moments:
        for p, q in zip(src.net.parameters(), dst.net.parameters(), strict=True):
            assert torch.equal(src.optimizer.state[p][key], dst.optimizer.state[q][key])
    for a, b in ((src.x_scaler, dst.x_scaler), (src.y_scaler, dst.y_scaler)):
        assert a.count == b.count
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.var, b.var)
    # what the learner predicts next is the same too, bit for bit, given the same fold count
    # (local: it sets the weight of the next fold into the average)
    dst.average.folds = src.average.folds
    Xn = X[:32]
    np.testing.assert_array_equal(dst.predict_many(Xn), src.predict_many(Xn))


def test_scatter_writes_into_the_same_tensors_and_keeps_local_state():
    src, dst = _learner(), _learner()
    _learn(src, *_data(0))
    _learn(dst, *_data(1, n=320))
    flat, buf = dst.flat_weights, dst.average.buffer
    steps, folds, window = dst.steps, dst.average.folds, len(dst.window)
    opt_step = next(iter(dst.optimizer.state.values()))["step"].clone()
    scatter(dst, gather(src))
    assert dst.flat_weights is flat and dst.average.buffer is buf
    assert next(dst.net.parameters()).data_ptr() == flat.data_ptr()
    assert (dst.steps, dst.average.folds, len(dst.window)) == (steps, folds, window)
    assert torch.equal(next(iter(dst.optimizer.state.values()))["step"], opt_step)


def test_a_learner_that_never_stepped_takes_the_moments_as_adams_first_step_would_hold_them():
    src, dst = _learner(), _learner()
    _learn(src, *_data(0))
    assert len(dst.optimizer.state) == 0
    scatter(dst, gather(src))
    assert torch.equal(gather(dst), gather(src))
    dst.learn_many(*[a[:32] for a in _data(2)])  # and it steps from there
    assert all(float(s["step"]) == 1.0 for s in dst.optimizer.state.values())


def test_the_dense_state_is_the_mean_of_the_learners():
    lrns = [_learner() for _ in range(3)]
    for i, lrn in enumerate(lrns):
        _learn(lrn, *_data(i))
    base = gather(_learner())
    vs = [gather(lrn) for lrn in lrns]
    lay = layout(lrns[0])
    out = _pool(vs, base, lay)
    np.testing.assert_array_equal(
        out[: lay.dense].numpy(), (torch.stack(vs).sum(0) / 3)[: lay.dense].numpy()
    )


def _one_over_all(shards):
    ref = Standardizer(shards[0].shape[1])
    for X in shards:
        for i in range(0, len(X), 32):
            ref.update_many(X[i : i + 32])
    return ref


def test_pooled_standardisers_equal_one_standardiser_over_all_data_round_after_round():
    lrns = [_learner(task="regression") for _ in range(3)]
    lay = layout(lrns[0])
    base = gather(lrns[0])  # all start empty
    seen_x, seen_y = [], []
    for r in range(3):
        for i, lrn in enumerate(lrns):
            X, _ = _data(10 * r + i, n=96 * (i + 1), loc=5.0 + i + r)  # unequal shares
            yv = X[:, :1].astype(np.float64) * 3 - 7
            for j in range(0, len(X), 32):
                lrn.x_scaler.update_many(X[j : j + 32])
                lrn.y_scaler.update_many(yv[j : j + 32])
            seen_x.append(X)
            seen_y.append(yv)
        base = _pool([gather(lrn) for lrn in lrns], base, lay)
        for lrn in lrns:
            scatter(lrn, base)
        for s, ref in (
            (lrns[1].x_scaler, _one_over_all(seen_x)),
            (lrns[2].y_scaler, _one_over_all(seen_y)),
        ):
            assert s.count == ref.count
            np.testing.assert_allclose(s.mean, ref.mean, rtol=1e-9, atol=0)
            np.testing.assert_allclose(s.var, ref.var, rtol=1e-9, atol=0)


def test_a_naive_mean_of_the_standardisers_would_be_wrong():
    """The check above can fail: averaging count, mean and m2 as plain numbers is not pooling."""
    a, b = Standardizer(1), Standardizer(1)
    a.update_many(np.zeros((10, 1)))
    b.update_many(np.full((30, 1), 4.0))
    ref = _one_over_all([np.zeros((10, 1)), np.full((30, 1), 4.0)])
    naive_var = (a.state_dict()["m2"] + b.state_dict()["m2"]) / 2 / ((a.count + b.count) / 2)
    assert abs(float(naive_var[0]) - float(ref.var[0])) > 1.0


def test_a_column_constant_on_every_learner_stays_constant_after_pooling():
    lrns = [_learner() for _ in range(2)]
    lay = layout(lrns[0])
    base = gather(lrns[0])
    for i, lrn in enumerate(lrns):
        X, _ = _data(i)
        X[:, 2] = 0.1  # rounding in 0.1's sums must not become a variance
        lrn.x_scaler.update_many(X)
    out = _pool([gather(lrn) for lrn in lrns], base, lay)
    scatter(lrns[0], out)
    _, inv = lrns[0].x_scaler.scale()
    assert inv[0] > 0 and inv[2] == 0


def test_a_vector_of_another_layout_is_refused():
    lrn = _learner()
    with pytest.raises(ValueError, match="expected"):
        scatter(lrn, torch.zeros(layout(lrn).size + 1, dtype=torch.float64))


def test_typed_features_are_refused_at_start_up():
    schema = SchemaConfig.model_validate(
        {"task": "binary", "features": {"a": {"type": "number"}, "c": {"type": "category"}}}
    )
    lrn = Learner(
        schema, ModelConfig(hidden=(8,)), LearningConfig(linear_member={"enabled": False})
    )
    with pytest.raises(StartupError, match="dense features only"):
        layout(lrn)
