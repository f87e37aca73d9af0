"""Input drift on category frequencies: a sudden change of a category's value distribution
raises an input-drift alarm on that category; a stationary one raises none."""

from __future__ import annotations

import numpy as np

from learnd.adapters.fakes import ListDeadLetters, ManualClock
from learnd.daemon.config import LearndConfig
from learnd.daemon.drift.inputs import InputDriftMonitor
from learnd.daemon.events.record import Record
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline

COUNTRIES = ["DE", "FR", "US", "JP", "IT", "ES"]
BEFORE = [0.5, 0.3, 0.1, 0.05, 0.03, 0.02]
AFTER = [0.1, 0.15, 0.3, 0.35, 0.05, 0.05]  # mass moves from DE/FR to US/JP


def pipeline(tmp_path) -> Pipeline:
    cfg = LearndConfig.model_validate(
        {
            "schema": {
                "task": "binary",
                "features": {"amount": "number", "country": "category"},
            },
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
            "serving": {"tcp_port": 0},
            "model": {"hidden": [8]},
        }
    )
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    return Pipeline(cfg, learner, ListDeadLetters(), ManualClock())


def feed(pipe: Pipeline, batches: int, switch_at: int | None, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for b in range(batches):
        probs = AFTER if switch_at is not None and b >= switch_at else BEFORE
        recs = []
        for i in range(32):
            country = COUNTRIES[int(rng.choice(len(COUNTRIES), p=probs))]
            event = {"features": {"amount": float(rng.normal()), "country": country}, "label": 1}
            recs.append(Record("t", 0, 32 * b + i, _json(event)))
        ok, bad = pipe.decoder.decode_many(recs)
        assert not bad
        pipe.learn_arrays(ok.X, ok.y)


def _json(event: dict) -> bytes:
    import orjson

    return orjson.dumps(event)


def country_alarms(pipe: Pipeline) -> dict[str, int]:
    return {k: v for k, v in pipe.input_drift.alarms.items() if k.startswith("country=")}


def test_a_sudden_change_of_category_frequencies_raises_input_drift(tmp_path):
    pipe = pipeline(tmp_path)
    feed(pipe, 300, switch_at=150)
    alarms = country_alarms(pipe)
    assert set(alarms) == {"country=top1", "country=top2", "country=top3", "country=other"}
    assert sum(alarms.values()) >= 1
    first = min(at for k, at in pipe.input_drift.last_alarm_at.items() if k in alarms and at >= 0)
    assert 150 * 32 <= first < 150 * 32 + 32 * 40, "alarmed soon after the switch, not before"
    assert pipe.input_drift.alarms["amount"] == 0


def test_stationary_category_frequencies_raise_no_input_drift(tmp_path):
    pipe = pipeline(tmp_path)
    feed(pipe, 300, switch_at=None)
    assert len(country_alarms(pipe)) == 4, "the category is watched"
    assert sum(country_alarms(pipe).values()) == 0
    assert pipe.input_drift.alarms["amount"] == 0


def test_tracked_values_survive_a_restore():
    rng = np.random.default_rng(1)
    mon = InputDriftMonitor(("a",), categories=(("c", 1),))
    for i in range(50):
        mon.update(np.c_[rng.normal(size=32), rng.choice([3.0, 5.0, 9.0, 11.0], 32)], 32 * i)
    restored = InputDriftMonitor(("a",), categories=(("c", 1),))
    restored.load_state_dict(mon.state_dict())
    np.testing.assert_array_equal(restored.shares.tracked[0], mon.shares.tracked[0])
    X = np.c_[np.zeros(8), [3.0, 3.0, 5.0, 9.0, 11.0, 11.0, 11.0, 11.0]]
    np.testing.assert_array_equal(restored.shares.shares(X), mon.shares.shares(X))
