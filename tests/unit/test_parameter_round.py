"""daemon/learning/parameter_round.py over in-process peers (adapters/fakes.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from learnd.adapters.fakes import InProcessGroup
from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.parameter_round import ParameterRound
from learnd.daemon.learning.state_vector import gather, layout
from learnd.daemon.ports import RoundFailed

# parameter rounds average one network: no linear member beside the MLP
ONE_NETWORK = LearningConfig(linear_member={"enabled": False})


def _learner():
    schema = SchemaConfig(task="binary", n_features=3)
    return Learner(schema, ModelConfig(hidden=(8,)), ONE_NETWORK, device="cpu")


def _shard(rank, n=320):
    rng = np.random.default_rng(rank)
    X = rng.normal(rank, 1.0, size=(n, 3)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 2 * rank).astype(np.float32)


def _group(n, every=1):
    group = InProcessGroup(n, timeout_s=10)
    lrns = [_learner() for _ in range(n)]
    return lrns, [ParameterRound(lrn, group.member(r), every) for r, lrn in enumerate(lrns)]


def _all(rounds, fn):
    with ThreadPoolExecutor(len(rounds)) as pool:
        return list(pool.map(fn, rounds))


def _learn(rnd):
    X, y = _shard(rnd.averager.rank)
    out = None
    for i in range(0, len(y), 32):
        rnd.learner.learn_many(X[i : i + 32], y[i : i + 32])
        out = rnd.after_batch() or out
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_after_a_round_every_learner_holds_the_same_state_the_mean_of_theirs(n):
    lrns, rounds = _group(n, every=10)
    for lrn, rnd in zip(lrns, rounds, strict=True):  # 9 batches each, no round yet
        X, y = _shard(rnd.averager.rank)
        for i in range(0, 288, 32):
            lrn.learn_many(X[i : i + 32], y[i : i + 32])
            assert rnd.after_batch() is None
    outs = _all(
        rounds,
        lambda r: (
            r.learner.learn_many(*[a[288:] for a in _shard(r.averager.rank)]),
            r.after_batch(),
        )[1],
    )
    assert all(o is not None and not o.drift for o in outs)
    states = [gather(lrn) for lrn in lrns]
    assert all(torch.equal(s, states[0]) for s in states)
    lay = layout(lrns[0])
    assert outs[0].values == (1 + lay.x_dim + 1 + 1 + 1) + lay.dense + lay.x_dim + 1
    assert all(r.rounds == 1 for r in rounds)


def test_the_weights_after_a_round_are_the_float64_mean_of_the_learners_weights():
    lrns, rounds = _group(3, every=1000)
    _all(rounds, _learn)
    expected = (torch.stack([lrn.flat_weights.double() for lrn in lrns]).sum(0) / 3).float()
    _all(rounds, lambda r: r.run())
    for lrn in lrns:
        assert torch.equal(lrn.flat_weights, expected)


def test_the_standardiser_after_a_round_has_seen_every_learners_events():
    lrns, rounds = _group(3, every=1000)
    _all(rounds, _learn)
    _all(rounds, lambda r: r.run())
    allX = np.concatenate([_shard(r)[0] for r in range(3)])
    assert all(lrn.x_scaler.count == len(allX) for lrn in lrns)
    np.testing.assert_allclose(lrns[0].x_scaler.mean, allX.astype(np.float64).mean(0), rtol=1e-9)


def test_one_learners_drift_alarm_makes_every_learner_react_at_the_round():
    lrns, rounds = _group(3, every=1000)
    _all(rounds, _learn)
    base_lr = lrns[0].learning.lr
    assert all(lrn.lr == pytest.approx(base_lr) for lrn in lrns)
    rounds[1].note_alarm()
    outs = _all(rounds, lambda r: r.run())
    assert [o.drift for o in outs] == [True, True, True]
    assert all(lrn.lr == pytest.approx(base_lr * lrn.learning.drift.lr_boost) for lrn in lrns)
    assert all(len(lrn.window) == 0 for lrn in lrns)  # on_drift emptied every replay window
    states = [gather(lrn) for lrn in lrns]
    assert all(torch.equal(s, states[0]) for s in states)  # the reaction kept them equal
    assert [o.drift for o in _all(rounds, lambda r: r.run())] == [False, False, False]


def test_a_round_a_peer_never_joins_fails_at_the_deadline():
    group = InProcessGroup(2, timeout_s=0.2)
    rnd = ParameterRound(_learner(), group.member(0), every=1)
    with pytest.raises(RoundFailed, match="did not meet within 0.2 s"):
        rnd.run()


def test_every_must_be_a_positive_number_of_batches():
    with pytest.raises(ValueError, match="at least 1"):
        ParameterRound(_learner(), InProcessGroup(1).member(0), every=0)


def test_an_outer_learning_rate_of_n_applies_the_sum_of_the_learners_changes():
    group = InProcessGroup(2, timeout_s=10)
    lrns = [_learner() for _ in range(2)]
    rounds = [
        ParameterRound(lrn, group.member(r), 1000, outer_lr=2.0) for r, lrn in enumerate(lrns)
    ]
    start = lrns[0].flat_weights.double().clone()
    _all(rounds, _learn)
    changes = sum(lrn.flat_weights.double() - start for lrn in lrns)
    mean = (lrns[0].flat_weights.double() + lrns[1].flat_weights.double()) / 2
    _all(rounds, lambda r: r.run())
    expected = (start + 2.0 * (mean - start)).float()
    assert torch.equal(lrns[0].flat_weights, expected) and torch.equal(
        lrns[1].flat_weights, expected
    )
    torch.testing.assert_close(lrns[0].flat_weights.double(), start + changes)
