"""RELIABILITY tests 11 (non-finite guard) and 13 (poison pill), with in-memory fakes."""

from __future__ import annotations

import numpy as np
import orjson

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from learnd.daemon.serving.snapshot import Snapshot, SnapshotRef
from tests.conftest import sea_config


class LrSpike:
    """The learner's schedule, multiplied by ``factor`` for ``length`` steps from ``start``."""

    def __init__(self, inner, start, length=100, factor=1e6):
        self.inner, self.start, self.length, self.factor = inner, start, length, factor

    def get(self, t):
        lr = self.inner.get(t)
        return lr * self.factor if self.start <= t < self.start + self.length else lr

    def __getattr__(self, name):
        return getattr(self.inner, name)


def build(cfg, learner_cls=Learner):
    clock = ManualClock()
    learner = learner_cls(cfg.schema_, cfg.model, cfg.learning, "cpu")
    dead = ListDeadLetters()
    pipe = Pipeline(cfg, learner, dead, clock, ref=SnapshotRef(keep=100_000))
    src, store = ListSource(batch=256), MemoryCheckpointStore()
    svc = Service(pipe, src, store, cfg.checkpoint, clock=clock)
    return svc, pipe, src, dead, store, clock


def test_non_finite_inputs_and_a_learning_rate_spike_never_reach_serving_or_checkpoints(tmp_path):
    # Batches of 32 throughout (the whole log is there at once, which would otherwise mean
    # catching up in batches of 256): the spike's steps must fall among these 20k events.
    cfg = sea_config(
        tmp_path,
        checkpoint={"every_events": 2000},
        learning={"publish_every_s": 0.1, "catch_up_lag": None},
    )
    svc, pipe, src, dead, store, clock = build(cfg)
    rng = np.random.default_rng(0)
    values, injected = [], 0
    for e in DriftingSEA(seed=51).take(20_000):
        raw = orjson.dumps(e)
        if rng.random() < 0.01:
            bad = rng.choice(["1e999", "-1e999", "1e38"])
            raw = raw.replace(b'"x2":', b'"x2":' + bad.encode() + b',"was":', 1)
            injected += 1
        values.append(raw)
    src.append(values)
    svc.restore()
    pipe.learner.schedule = LrSpike(pipe.learner.schedule, start=200)
    while src.remaining():
        svc.step()
        clock.advance(0.05)
    svc.checkpoint()

    assert sum(pipe.rejected.values()) == injected > 150
    assert {r for _, r, _ in dead.sent} == {"non_finite", "out_of_range"}
    assert pipe.learner.rollbacks >= 1
    for state in store.saved:
        assert all(bool(np.isfinite(t.numpy()).all()) for t in state["learner"]["model"].values())
    published = pipe.ref.history()
    assert len(published) >= 3 and pipe.publisher.gate_rejected >= 1, (
        "the gate held back spiked models"
    )
    assert all(
        np.isfinite(w).all() for s in published for w in (*s.forward.weights, *s.forward.biases)
    )
    assert pipe.metrics.accuracy > 0.85, "learning recovered after the spike"


class PoisonLearner(Learner):
    """A valid event whose learning step raises: x1 == 4242."""

    def learn_many(self, X, y):
        if (X[:, 0] == 4242.0).any():
            raise RuntimeError("poison")
        return super().learn_many(X, y)


def test_poison_pill_is_retried_then_dead_lettered_and_nothing_else_is_lost(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, dead, store, clock = build(cfg, PoisonLearner)
    events = list(DriftingSEA(seed=52).take(1000))
    events[500]["features"]["x1"] = 4242.0
    src.append(events)
    svc.restore()
    while src.remaining():
        svc.step()
    svc.checkpoint()
    assert [(r.offset, reason) for r, reason, _ in dead.sent] == [(500, "learn_failed")]
    assert orjson.loads(dead.sent[0][0].value)["id"] == 500, "the original bytes are kept"
    assert pipe.learner.events_learned == 999 and pipe.valid == 999
    # one batch of 32 failed 3 times, then its poison event failed 3 more times alone
    assert pipe.learn_failures == 6
    assert src.remaining() == 0 and store.saved[-1]["positions"] == {0: 1000}


def test_scalers_are_not_touched_by_a_step_that_raises(tmp_path):
    cfg = sea_config(tmp_path)
    lrn = PoisonLearner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    X = np.ones((4, 3), np.float32)
    lrn.learn_many(X, np.ones(4, np.float32))
    before = lrn.x_scaler.state_dict()
    bad = X.copy()
    bad[0, 0] = 4242.0
    try:
        lrn.learn_many(bad, np.ones(4, np.float32))
    except RuntimeError:
        pass
    after = lrn.x_scaler.state_dict()
    assert after["count"] == before["count"] and np.array_equal(after["mean"], before["mean"])


def test_gate_blocks_a_sign_flipped_candidate_20_of_20_and_passes_a_good_one_20_of_20(tmp_path):
    """RELIABILITY test 10, on fresh SEA windows the candidates have not trained on."""
    from learnd.daemon.serving.gate import judge

    cfg = sea_config(tmp_path)
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    events = list(DriftingSEA(seed=91).take(5000 + 20 * 2000))
    X = np.array([[e["features"][k] for k in ("x1", "x2", "x3")] for e in events], np.float32)
    y = np.array([e["label"] for e in events], np.float32)
    for i in range(0, 5000, 32):
        learner.learn_many(X[i : i + 32], y[i : i + 32])
    ref = SnapshotRef()
    served = ref.publish(Draft_of(learner))
    flipped_published = good_published = 0
    for k in range(20):
        window = slice(5000 + 2000 * k, 7000 + 2000 * k)  # the default gate window
        good = Draft_of(learner)
        w = good.weights
        flipped = type(good)(
            **{
                **{f: getattr(good, f) for f in good.__slots__},
                "weights": type(w)(
                    **{
                        **{f: getattr(w, f) for f in w.__slots__},
                        "biases": (*w.biases[:-1], -w.biases[-1]),
                        "weights": (*w.weights[:-1], -w.weights[-1]),
                    }
                ),
            }
        )
        for draft, counter in ((good, "good"), (flipped, "flipped")):
            out = Snapshot.from_draft(draft, -1).predict_many(X[window])
            verdict = judge("binary", out, served.predict_many(X[window]), y[window], 0.005)
            if verdict.publish and counter == "good":
                good_published += 1
            if verdict.publish and counter == "flipped":
                flipped_published += 1
        for i in range(window.start, window.stop, 32):  # the learner moves on meanwhile
            learner.learn_many(X[i : i + 32], y[i : i + 32])
    assert (flipped_published, good_published) == (0, 20)


def Draft_of(learner):  # noqa: N802 - reads like the type it builds
    from learnd.daemon.serving.snapshot import Draft

    return Draft("binary", (0, 1), ("x1", "x2", "x3"), learner.export(), learner.events_learned, {})
