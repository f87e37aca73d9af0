"""Rehearsal of recently learned events (daemon/learning/replay_window.py, Learner.replay): what it
learns from, when it runs, what empties it, and that it is checkpointed exactly."""

from __future__ import annotations

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from learnd.adapters.fakes import ListSource
from learnd.adapters.metrics.prometheus import LearndCollector
from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.replay_window import ReplayWindow
from tests.conftest import sea_config
from tests.unit.test_pipeline_service import build, drain

TWO = SchemaConfig(task="binary", n_features=2)


def rings(n=5300, seed=0):
    """A small, strongly non-linear stream (inside or outside a ring), like river's Bananas."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 2)).astype(np.float32)
    r = np.hypot(X[:, 0], X[:, 1])
    return X, ((r > 0.8) & (r < 1.6)).astype(np.float32)


def prequential(learner, X, y, replay):
    errors = []
    for i in range(0, len(y), 32):
        errors.append(learner.learn_many(X[i : i + 32], y[i : i + 32]).errors)
        learner.replay(replay)
    return 1 - np.concatenate(errors).mean()


def test_the_window_keeps_the_newest_rows_and_restores_exactly():
    w = ReplayWindow(capacity=100, dim=2, seed=4)
    X = np.arange(500, dtype=np.float32).reshape(250, 2)
    for i in range(0, 250, 30):  # wraps several times, in uneven chunks
        w.add(X[i : i + 30], np.arange(i, min(i + 30, 250)))
    rows, labels = w.rows()
    assert len(w) == 100 and labels.tolist() == list(range(150, 250))
    assert np.array_equal(rows, X[150:])
    copy = ReplayWindow(capacity=100, dim=2)
    copy.load_state_dict(w.state_dict())
    for _ in range(3):  # same rows, same ring position, same generator: same draws
        a, b = w.sample(16), copy.sample(16)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = ReplayWindow(capacity=100, dim=3)
    other.load_state_dict(w.state_dict())  # another schema's window is not taken
    assert len(other) == 0


def test_a_window_restored_at_another_size_keeps_its_newest_rows():
    # learning.replay.window changed across a restart (the default went from 2,000 to 1,000).
    w = ReplayWindow(capacity=100, dim=2, seed=4)
    X = np.arange(500, dtype=np.float32).reshape(250, 2)
    for i in range(0, 250, 30):  # wrapped: the oldest row is not at position 0
        w.add(X[i : i + 30], np.arange(i, min(i + 30, 250)))
    state = w.state_dict()
    assert state["head"] != 0
    new = np.full((30, 2), -1.0, np.float32), np.full(30, -1)

    smaller = ReplayWindow(capacity=40, dim=2)
    smaller.load_state_dict(state)
    assert len(smaller) == 40 and smaller.rows()[1].tolist() == list(range(210, 250))
    smaller.add(*new)  # the oldest go first
    assert smaller.rows()[1].tolist() == list(range(240, 250)) + [-1] * 30

    larger = ReplayWindow(capacity=300, dim=2)
    larger.load_state_dict(state)
    assert len(larger) == 100 and np.array_equal(larger.rows()[0], X[150:])
    larger.add(*new)  # appended after the newest, none of the held rows overwritten
    assert larger.rows()[1].tolist() == list(range(150, 250)) + [-1] * 30
    drawn = larger.sample(2000)[1]  # every draw is a row that was learned, none an empty slot
    assert set(drawn.tolist()) <= set(range(150, 250)) | {-1}


def test_replay_lifts_prequential_accuracy_on_a_small_nonlinear_stream():
    X, y = rings()
    accs = {}
    for k in (0, 3):
        torch.manual_seed(0)
        accs[k] = prequential(Learner(TWO, ModelConfig(), LearningConfig(), "cpu"), X, y, k)
    assert accs[3] > accs[0] + 0.1, accs  # measured: 0.779 -> 0.918


def test_replay_steps_learn_only_from_learned_events_and_count_nothing_as_learned():
    X, y = rings(640)
    lrn = Learner(TWO, ModelConfig(), LearningConfig(), "cpu")
    assert lrn.replay(3) == 0  # nothing learned yet: nothing to rehearse
    lrn.learn_many(X[:32], y[:32])
    scaler = lrn.x_scaler.state_dict()
    before = [p.detach().clone() for p in lrn.net.parameters()]
    assert lrn.replay(3) == 3
    assert (lrn.events_learned, lrn.steps, lrn.replay_steps) == (32, 1, 3)
    assert lrn.x_scaler.state_dict()["count"] == scaler["count"]
    assert any(not torch.equal(a, b) for a, b in zip(before, lrn.net.parameters(), strict=True))
    # a batch holding a non-finite value is skipped, and not put in the window either
    bad = X[32:64].copy()
    bad[0, 0] = np.nan
    lrn.learn_many(bad, y[32:64])
    assert len(lrn.window) == 32


def test_a_drift_alarm_and_a_rollback_empty_the_window():
    X, y = rings(640)
    lrn = Learner(TWO, ModelConfig(), LearningConfig(), "cpu")
    for i in range(0, 320, 32):
        lrn.learn_many(X[i : i + 32], y[i : i + 32])
    assert len(lrn.window) == 320
    lrn.on_drift()  # the old concept is not rehearsed
    assert len(lrn.window) == 0 and lrn.replay(3) == 0
    lrn.learn_many(X[320:352], y[320:352])
    assert len(lrn.window) == 32
    lrn.rollback()  # what broke the model may be in it
    assert len(lrn.window) == 0


def test_replay_runs_only_while_the_consumer_keeps_up(tmp_path):
    cfg = sea_config(
        tmp_path,
        learning={
            "replay": {"steps_per_batch": 2, "refill_steps_per_batch": 5, "max_lag": 1000},
            "catch_up_lag": None,
        },
    )
    src = ListSource(batch=500)
    svc, pipe, _, _ = build(cfg, src)
    registry = CollectorRegistry()
    registry.register(LearndCollector(pipe, svc.health, src))

    def gauge(name):
        return next(s.value for m in registry.collect() for s in m.samples if s.name == name)

    steps = []
    learn_many = pipe.learner.learn_many

    def learning(X, y):  # what the pipeline will rehearse after this batch
        result = learn_many(X, y)
        steps.append(pipe.replay_steps())
        return result

    pipe.learner.learn_many = learning
    src.append(list(DriftingSEA(seed=9).take(6000)))
    svc.restore()
    svc.step()  # lag 5500 after this poll
    assert gauge("learnd_replay_steps_per_batch") == 0
    drain(svc, src)
    svc.checkpoint()
    # behind (lag above 1000) for the first polls: no rehearsal; then 2 steps per batch (the
    # window filled while behind, so there is no refill phase; no alarm on this stream)
    assert pipe.drift.alarms == 0
    first = steps.index(2)
    assert set(steps[:first]) == {0} and first >= 100
    assert set(steps[first:]) == {2}
    assert pipe.learner.replay_steps == 2 * len(steps[first:])
    assert gauge("learnd_replay_steps_per_batch") == 2
    assert gauge("learnd_replay_window_events") == cfg.learning.replay.window  # full
    applied = {
        s.labels["outcome"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "learnd_learn_steps_total"
    }
    assert applied["replay"] == pipe.learner.replay_steps > 0


def test_more_rehearsal_while_the_window_refills_at_start_and_after_an_alarm():
    cfg = LearningConfig(replay={"steps_per_batch": 2, "refill_steps_per_batch": 5, "window": 320})
    lrn = Learner(TWO, ModelConfig(), cfg, "cpu")
    X, y = rings(1000)
    taken = []
    for i in range(0, 640, 32):
        lrn.learn_many(X[i : i + 32], y[i : i + 32])
        taken.append(lrn.replay())
    assert taken == [5] * 9 + [2] * 11  # full after 10 batches (320 events)
    lrn.on_drift()
    lrn.learn_many(X[640:672], y[640:672])
    assert lrn.rehearsal_steps() == 5 and lrn.replay() == 5


def test_a_refilling_window_is_rehearsed_up_to_refill_max_lag_a_full_one_up_to_max_lag(tmp_path):
    cfg = sea_config(
        tmp_path,
        learning={
            "replay": {"window": 320, "max_lag": 1000, "refill_max_lag": 3000},
            "catch_up_lag": None,
        },
    )
    _, pipe, _, _ = build(cfg)
    X = np.random.default_rng(0).uniform(0, 10, size=(1000, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 10).astype(np.float32)  # SEA's first concept
    steps = []
    for i in range(0, 640, 32):
        pipe.set_backlog(2000)  # above max_lag, below refill_max_lag
        steps.append(pipe.replay_steps())
        pipe.learn_arrays(X[i : i + 32], y[i : i + 32])
    assert steps == [8] * 10 + [0] * 10  # the window is full after 10 batches (320 events)
    assert pipe.learner.replay_steps == 8 * 9  # none on the first batch: nothing learned yet
    pipe.learner.on_drift()  # an alarm empties it: headroom again
    assert pipe.replay_steps() == 8
    pipe.set_backlog(3001)
    assert pipe.replay_steps() == 0
    pipe.set_backlog(1000)
    pipe.learn_arrays(X[640:960], y[640:960])  # refilled in one batch of 320
    assert not pipe.learner.refilling and pipe.replay_steps() == 3
    # a refill_max_lag below max_lag counts as max_lag
    low = sea_config(tmp_path, learning={"replay": {"max_lag": 1000, "refill_max_lag": 10}})
    _, pipe, _, _ = build(low)
    pipe.set_backlog(1000)
    assert pipe.learner.refilling and pipe.replay_steps() == 8


def test_a_rehearsal_step_that_raises_is_counted_and_learning_goes_on(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, dead = build(cfg)
    calls = []

    def failing(steps=None):
        calls.append(steps)
        raise RuntimeError("out of memory")

    pipe.learner.replay = failing
    src.append(list(DriftingSEA(seed=3).take(640)))
    svc.restore()
    drain(svc, src)
    svc.checkpoint()
    assert pipe.learner.events_learned == 640 and pipe.learn_failures == 0
    assert pipe.replay_failures == len(calls) == 20 and not dead.sent
