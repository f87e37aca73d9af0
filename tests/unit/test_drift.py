from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnd.daemon.drift.concept import DriftMonitor


def stream(seed, *segments):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(n) < p for n, p in segments]).astype(float)


def test_error_rise_is_flagged_at_the_exact_index():
    mon = DriftMonitor("adwin")
    assert mon.update_many(stream(3, (5000, 0.1), (3000, 0.3)), start=0) == [5119]
    assert (mon.alarms, mon.last_alarm_at, mon.improvements) == (1, 5119, 0)


def test_error_fall_is_an_improvement_not_an_alarm():
    mon = DriftMonitor("adwin")
    assert mon.update_many(stream(4, (5000, 0.3), (3000, 0.1)), start=0) == []
    assert (mon.alarms, mon.improvements) == (0, 1)


def test_no_false_alarm_on_a_stationary_stream():
    mon = DriftMonitor("adwin")
    assert mon.update_many(stream(5, (50_000, 0.1)), start=0) == []


def test_chunking_does_not_change_alarm_positions():
    errors = stream(3, (5000, 0.1), (3000, 0.3))
    mon = DriftMonitor("adwin")
    found = []
    for i in range(0, len(errors), 37):
        found += mon.update_many(errors[i : i + 37], start=i)
    assert found == [5119]


@pytest.mark.parametrize("name", ["page_hinkley", "kswin"])
def test_other_detectors_flag_a_large_rise(name):
    mon = DriftMonitor(name)
    found = mon.update_many(stream(6, (3000, 0.05), (3000, 0.6)), start=0)
    assert found and 3000 <= found[0] < 3500


def test_state_round_trip_keeps_counts_and_recent_window():
    mon = DriftMonitor("adwin")
    mon.update_many(stream(3, (5000, 0.1), (3000, 0.3)), start=0)
    restored = DriftMonitor("adwin")
    restored.load_state_dict(mon.state_dict())
    assert (restored.alarms, restored.last_alarm_at) == (1, 5119)
    assert restored.estimation == pytest.approx(mon.estimation, abs=0.02)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.integers(1, 300), min_size=1, max_size=40),
    replay=st.integers(1, 500),
    seed=st.integers(0, 100),
)
def test_the_replay_window_is_the_last_inputs_since_the_last_alarm(batches, replay, seed):
    """What a restore replays: the last ``replay`` inputs, none from before the last alarm."""
    errors = stream(seed, (sum(batches) // 2, 0.05), (sum(batches) - sum(batches) // 2, 0.7))
    mon = DriftMonitor("adwin", replay=replay)
    seen: list[float] = []
    start = 0
    for n in batches:
        chunk = errors[start : start + n]
        found = mon.update_many(chunk, start)
        seen += chunk.tolist()
        if found:
            seen = errors[found[-1] + 1 : start + len(chunk)].tolist()
        start += n
        np.testing.assert_array_equal(mon.state_dict()["recent"], np.array(seen[-replay:]))


def test_disabled_monitor_never_alarms():
    assert DriftMonitor("none").update_many(stream(3, (100, 0.0), (100, 1.0)), start=0) == []


def _delays(jump_to):
    delays, false_alarms = [], 0
    for seed in range(20):
        errors = stream(seed, (50_000, 0.1), (2000, jump_to))
        mon = DriftMonitor("adwin")
        found = []
        for i in range(0, len(errors), 32):  # the default micro-batch
            found += mon.update_many(errors[i : i + 32], start=i)
        false_alarms += sum(a < 50_000 for a in found)
        delays.append(min(a for a in found if a >= 50_000) - 50_000)
    assert false_alarms == 0
    assert (
        delays == [111, 111, 111, 111, 79, 143, 111, 143, 143, 175] + [79] * 4 + [143] + [111] * 5
    )
    assert max(delays) < 500


def test_input_drift_is_reported_per_feature_apart_from_concept_drift(tmp_path):
    """x1 moves by +3 while the labels keep following the same concept: input drift on x1 only."""
    from learnd.adapters.fakes import ListDeadLetters, ManualClock
    from learnd.daemon.events.synthetic import FEATURES, DriftingSEA
    from learnd.daemon.learning.learner import Learner
    from learnd.daemon.pipeline import Pipeline
    from tests.conftest import sea_config

    cfg = sea_config(tmp_path)
    pipe = Pipeline(
        cfg, Learner(cfg.schema_, cfg.model, cfg.learning, "cpu"), ListDeadLetters(), ManualClock()
    )
    events = list(DriftingSEA(seed=21, switch_every=10**9).take(12_000))
    X = np.array([[e["features"][k] for k in FEATURES] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    X[6000:, 0] += 3.0
    for i in range(0, len(y), 32):
        pipe.learn_arrays(X[i : i + 32], y[i : i + 32])
    alarms = pipe.input_drift.alarms
    assert alarms["x1"] >= 1 and alarms["x2"] == alarms["x3"] == 0
    assert 6000 <= pipe.input_drift.last_alarm_at["x1"] < 6000 + 32 * 20


def test_input_drift_monitors_are_checkpointed(tmp_path):
    """Counts survive a restart, and each detector is rebuilt from the batch means since its
    feature's last alarm (through a real checkpoint file)."""
    from learnd.adapters.storage.local import LocalCheckpointStore
    from learnd.daemon.drift.inputs import InputDriftMonitor

    rng = np.random.default_rng(5)
    mon = InputDriftMonitor(("a", "b"), replay=300)
    for i in range(500):  # "b" jumps at batch 200; 300 batches after it
        mon.update(rng.normal(size=(32, 2)) + [0.0, 3.0 * (i >= 200)], start=32 * i)
    assert mon.alarms["a"] == 0 and mon.alarms["b"] >= 1
    store = LocalCheckpointStore(tmp_path)
    store.save({"format": 1, "input_drift": mon.state_dict()})
    state = store.load_latest()["input_drift"]
    since_b = (32 * 500 - 1 - mon.last_alarm_at["b"]) // 32
    assert len(state["recent"][0]) == 300 and len(state["recent"][1]) == since_b

    restored = InputDriftMonitor(("a", "b"), replay=300)
    restored.load_state_dict(state)
    assert restored.alarms == mon.alarms and restored.last_alarm_at == mon.last_alarm_at
    for name in ("a", "b"):
        assert restored.estimates()[name] == pytest.approx(mon.estimates()[name], abs=0.02)
    np.testing.assert_array_equal(restored.state_dict()["recent"][1], state["recent"][1])
    assert restored.estimates()["b"] == pytest.approx(3.0, abs=0.05), "no pre-jump means replayed"

    other = InputDriftMonitor(("a", "c"))
    other.load_state_dict(state)  # a checkpoint for other features restores nothing
    assert other.alarms == {"a": 0, "c": 0}
