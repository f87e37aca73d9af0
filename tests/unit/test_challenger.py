"""The background challenger (daemon/learning/challenger.py): started on a warning, trained beside the
incumbent, promoted when better on a window, dropped otherwise, and checkpointed mid-run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from learnd.adapters.fakes import ListDeadLetters, ManualClock
from learnd.daemon.config import (
    ChallengerConfig,
    LearndConfig,
    LearningConfig,
    ModelConfig,
    SchemaConfig,
)
from learnd.daemon.learning.challenger import Challenger
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline

SWITCH = 8000


def stream(seed=1, before=SWITCH, after=12_000):
    """A concept on x0 and x1, then an unrelated one (the sign of x1 * x2) from ``before`` on."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(before + after, 3)).astype(np.float32)
    first = X[:, 0] + 0.5 * X[:, 1] > 0
    second = X[:, 1] * X[:, 2] > 0
    return X, np.where(np.arange(len(X)) < before, first, second).astype(np.float32)


def pipeline(tmp_path, device="cpu", replay=True, **challenger):
    torch.manual_seed(0)
    cfg = LearndConfig.model_validate(
        {
            "schema": {"task": "binary", "n_features": 3},
            "checkpoint": {"dir": str(tmp_path)},
            "serving": {"tcp_port": 0},
            "learning": {
                "drift": {"challenger": challenger},
                "replay": {} if replay else {"steps_per_batch": 0, "refill_steps_per_batch": 0},
            },
        }
    )
    return Pipeline(
        cfg, Learner(cfg.schema_, cfg.model, cfg.learning, device), ListDeadLetters(), ManualClock()
    )


def run(pipe, X, y, start=0, stop=None, record=None):
    learn_many = pipe.learner.learn_many
    if record is not None:

        def recording(Xb, yb):
            result = learn_many(Xb, yb)
            record.append(result.errors)
            return result

        pipe.learner.learn_many = recording
    for i in range(start, len(y) if stop is None else stop, 32):
        pipe.learn_arrays(X[i : i + 32], y[i : i + 32])
    pipe.learner.learn_many = learn_many


def test_a_warning_starts_a_challenger_that_is_promoted_and_serves_better(tmp_path):
    # Without rehearsal. With it (the default), the incumbent, its replay window emptied by
    # the alarm, re-learns this switch so fast that no challenger wins here (0.978 over the
    # same 4,000 events either way); on bench/quality.py's Agrawal stream it still adds points.
    X, y = stream()
    errors: list[np.ndarray] = []
    pipe = pipeline(tmp_path, replay=False)
    run(pipe, X, y, record=errors)
    ch = pipe.challenger
    assert list(pipe.alarms_at) == [8031]
    assert (ch.warnings, ch.started, ch.promoted, ch.dropped) == (1, 1, 1, 0)
    assert (ch.started_at, ch.ended_at, ch.state) == (8031, 9344, "idle")

    base_errors: list[np.ndarray] = []
    run(pipeline(tmp_path, replay=False, enabled=False), X, y, record=base_errors)
    after = slice(10_000, 14_000)  # the 4,000 events after the promotion
    with_ch = 1 - np.concatenate(errors)[after].mean()
    without = 1 - np.concatenate(base_errors)[after].mean()
    assert with_ch > without + 0.005, (with_ch, without)


def test_no_warning_no_challenger_on_a_stationary_stream(tmp_path):
    # (seed 1 of this stream is not quiet: its incumbent's own error rises near event 14,600,
    # the drift detector agrees, and the challenger that starts then wins by over a point)
    X, y = stream(seed=2, before=50_000, after=0)
    pipe = pipeline(tmp_path)
    run(pipe, X, y)
    ch = pipe.challenger
    assert (ch.warnings, ch.started, ch.state) == (0, 0, "idle")


def test_a_challenger_that_cannot_win_is_dropped_after_max_events():
    schema = SchemaConfig(task="binary", n_features=3)
    torch.manual_seed(0)

    def make():
        return Learner(schema, ModelConfig(hidden=(8,)), LearningConfig(), "cpu")

    ch = Challenger(make, ChallengerConfig(window=100, max_events=640))
    ch.start(make(), at=0)
    X, y = stream(before=2000, after=0)
    perfect = np.zeros(32)  # an incumbent that makes no mistakes cannot be beaten
    outcomes = [ch.observe(X[i : i + 32], y[i : i + 32], perfect) for i in range(0, 640, 32)]
    assert outcomes == [None] * 19 + ["drop"]
    ch.finish(promoted=False, at=640)
    assert (ch.started, ch.promoted, ch.dropped, ch.state) == (1, 0, 1, "idle")


def test_a_checkpoint_taken_mid_challenge_resumes_it_exactly(tmp_path, device):
    X, y = stream()
    # With rehearsal and the averaged weights, the challenger wins 64 events after the
    # checkpoint: the restored run must reach the same promotion at the same event.
    first = pipeline(tmp_path / "a", device, max_events=4000)
    run(first, X, y, stop=8992)  # the challenger started at 8031 and has not won yet
    assert first.challenger.state == "training"
    state = first.state_dict()

    restored = pipeline(tmp_path / "b", device, max_events=4000)
    torch.manual_seed(123)  # the restored run must not depend on fresh initial weights
    restored.load_state_dict(state)
    assert restored.challenger.state == "training"
    assert restored.challenger.errors() == first.challenger.errors()

    a_err: list[np.ndarray] = []
    b_err: list[np.ndarray] = []
    run(first, X, y, start=8992, record=a_err)
    run(restored, X, y, start=8992, record=b_err)
    np.testing.assert_array_equal(np.concatenate(a_err), np.concatenate(b_err))
    assert first.challenger.ended_at == restored.challenger.ended_at > 8992
    if device == "cpu":  # the exact event on this stream (CUDA's arithmetic differs)
        assert first.challenger.ended_at == 9056 and first.challenger.promoted == 1
    Xq = X[-100:]
    np.testing.assert_array_equal(first.learner.predict_many(Xq), restored.learner.predict_many(Xq))


def test_a_checkpoint_without_challenger_state_still_loads(tmp_path):
    X, y = stream(before=3000, after=0)
    old = pipeline(tmp_path / "a", enabled=False)
    run(old, X, y)
    state = old.state_dict()
    assert "challenger" not in state
    new = pipeline(tmp_path / "b")
    new.load_state_dict(state)
    assert new.challenger.state == "idle" and new.learner.events_learned == 3000


def test_max_events_below_the_window_is_a_config_error():
    with pytest.raises(ValidationError, match="max_events .* is below its window"):
        ChallengerConfig(window=1000, max_events=500)


@pytest.mark.parametrize("recent_share, promoted", [(0.25, False), (1.0, True)])
def test_no_promotion_while_the_incumbent_is_better_on_the_newest_events(recent_share, promoted):
    """Better over the whole window is not enough: an incumbent that has re-learned the new
    concept (no errors over the newest quarter) keeps serving."""
    schema = SchemaConfig(task="binary", n_features=3)
    torch.manual_seed(0)

    def make():
        return Learner(schema, ModelConfig(hidden=(8,)), LearningConfig(), "cpu")

    cfg = ChallengerConfig(window=128, margin=0.01, recent_share=recent_share, max_events=10_000)
    ch = Challenger(make, cfg)
    ch.start(make(), at=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 3)).astype(np.float32)
    y = (rng.random(128) < 0.5).astype(np.float32)  # a coin: the challenger errs half the time
    incumbent = np.r_[np.ones(96), np.zeros(32)]  # wrong, then right over the newest quarter
    outcomes = [
        ch.observe(X[i : i + 32], y[i : i + 32], incumbent[i : i + 32]) for i in range(0, 128, 32)
    ]
    inc, chal = ch.errors()
    assert chal < inc - 0.01  # better over the window as a whole
    assert outcomes[-1] == ("promote" if promoted else None)
