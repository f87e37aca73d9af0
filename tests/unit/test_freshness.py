"""What is learned is served: bursts, a stream that stops, and restarts (with in-memory fakes).

The clock is a manual one: "within a second" means within a second of the pipeline's clock,
stepped the way the daemon's loop steps it; nothing here measures wall time.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from learnd.daemon.serving.snapshot import SnapshotRef
from tests.conftest import sea_config


def build(cfg, store=None, clock=None, record=None):
    clock = clock or ManualClock()
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    ref = SnapshotRef(keep=cfg.serving.keep_versions)
    if record is not None:  # every (version, model) ever served, across restarts
        ref.subscribe(lambda s: record.append((s.version, _fingerprint(s))))
    pipe = Pipeline(cfg, learner, ListDeadLetters(), clock, ref=ref)
    src = ListSource(batch=2000)
    svc = Service(pipe, src, store or MemoryCheckpointStore(), cfg.checkpoint, clock=clock)
    return svc, pipe, src, clock


def _fingerprint(snap) -> bytes:
    X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    return snap.predict_many(X).round(6).tobytes()


def run_for(svc, clock, seconds, dt=0.05):
    """The daemon's loop for ``seconds`` of the pipeline's clock."""
    for _ in range(round(seconds / dt)):
        svc.step()
        clock.advance(dt)


def test_a_burst_of_1000_events_is_served_trained_within_a_second(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, clock = build(cfg)
    svc.restore()
    assert pipe.ref.current.trained_events == 0
    src.append(list(DriftingSEA(seed=61).take(1000)))  # all at once, then nothing
    run_for(svc, clock, 1.0)
    assert pipe.learner.events_learned == 1000
    assert pipe.ref.current.trained_events == 1000, "the burst's model is served"


def test_a_stream_that_stops_has_its_last_learned_state_served(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, clock = build(cfg)
    svc.restore()
    events = list(DriftingSEA(seed=62).take(6000))
    for i in range(0, 6000, 100):  # 2,000 events a second, then the stream stops
        src.append(events[i : i + 100])
        run_for(svc, clock, 0.05)
    run_for(svc, clock, 1.0)
    assert pipe.ref.current.trained_events == pipe.learner.events_learned == 6000
    assert pipe.publisher.published > 20, "published every few batches while the events flowed"


def test_a_stream_that_stops_on_a_broken_model_keeps_serving_the_last_good_one(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, clock = build(cfg)
    svc.restore()
    src.append(list(DriftingSEA(seed=63).take(4000)))
    run_for(svc, clock, 1.0)
    good = pipe.ref.current
    assert good.trained_events == 4000
    export = pipe.learner.export

    def sign_flipped():  # the last step broke the model: every answer reversed
        w = export()
        return replace(
            w, weights=(*w.weights[:-1], -w.weights[-1]), biases=(*w.biases[:-1], -w.biases[-1])
        )

    pipe.learner.export = sign_flipped
    src.append(list(DriftingSEA(seed=64).take(40)))  # a last batch or so, then nothing
    run_for(svc, clock, 1.0)
    assert pipe.learner.events_learned == 4040
    assert pipe.ref.current.version == good.version
    assert pipe.publisher.gate_rejected >= 1 and pipe.publisher.last_verdict.reason == "worse"


def test_version_numbers_are_never_reused_across_a_crash(tmp_path):
    cfg = sea_config(
        tmp_path,
        checkpoint={"every_events": 1500},
        learning={"publish_every_s": 0.1, "gate": {"window": 200}},
    )
    store = MemoryCheckpointStore()
    served: list[tuple[int, bytes]] = []
    events = list(DriftingSEA(seed=65).take(9000))
    svc, pipe, src, clock = build(cfg, store, record=served)
    svc.restore()
    for i in range(0, 4400, 100):
        src.append(events[i : i + 100])
        run_for(svc, clock, 0.05)
    last = store.saved[-1]["learner"]["events_learned"]
    assert last < 4400 and max(v for v, _ in served) > 2, "published since the last checkpoint"
    # killed: no final checkpoint; versions published since the last one are in no checkpoint
    svc2, pipe2, src2, clock2 = build(cfg, store, record=served)
    src2.log, src2.next = src.log, {0: 0}
    svc2.restore()
    for i in range(4400, 9000, 100):
        src2.append(events[i : i + 100])
        run_for(svc2, clock2, 0.05)
    models: dict[int, set[bytes]] = {}
    for version, model in served:
        models.setdefault(version, set()).add(model)
    reused = {v: len(m) for v, m in models.items() if len(m) > 1}
    assert not reused, f"version numbers answered for more than one model: {reused}"
    versions = [v for v, _ in served]
    assert versions == sorted(versions), "versions only increase, across the restart too"


def test_a_restart_serves_the_gated_version_and_can_roll_back_past_it(tmp_path):
    cfg = sea_config(tmp_path, learning={"publish_every_s": 0.5})
    store = MemoryCheckpointStore()
    svc, pipe, src, clock = build(cfg, store)
    svc.restore()
    events = list(DriftingSEA(seed=66).take(5000))
    for i in range(0, 5000, 100):
        src.append(events[i : i + 100])
        run_for(svc, clock, 0.05)
    svc.checkpoint()
    served, kept = pipe.ref.current, [s.version for s in pipe.ref.history()]
    assert served.trained_events < pipe.learner.events_learned, "the learner is ahead"

    svc2, pipe2, _, _ = build(cfg, store)
    svc2.restore()
    again = pipe2.ref.current
    assert again.version > served.version
    assert again.trained_events == served.trained_events
    assert _fingerprint(again) == _fingerprint(served), "the gated model, not the learner's"
    # the versions kept before the restart are kept still (the oldest made room for ``again``)
    assert [s.version for s in pipe2.ref.history()] == [*kept[1:], again.version]
    older = pipe2.ref.rollback(kept[1])
    assert older.rolled_back_from == kept[1] and older.version > again.version


class WorkClock(ManualClock):
    """A clock on which every reading costs ``cost`` seconds: work the pipeline times (the
    publish path) is charged for the readings it takes."""

    def __init__(self, cost: float):
        super().__init__()
        self.cost = cost

    def __call__(self) -> float:
        self.t += self.cost
        return self.t


def test_behind_the_log_the_publish_path_keeps_to_its_share_of_the_learning_thread(tmp_path):
    cfg = sea_config(tmp_path, learning={"publish_budget": 0.05, "catch_up_lag": 2000})
    svc, pipe, src, clock = build(cfg, clock=WorkClock(0.002))
    svc.restore()
    src.append(list(DriftingSEA(seed=64).take(12_000)))  # a backlog: behind the log
    while pipe.learner.events_learned < 8_000:
        svc.step()
    budget = pipe.publisher.budget
    assert pipe.publisher.behind
    assert budget.skipped > 0, "batches past the budget are learned unscored"
    scored = pipe.publisher.served_metrics.seen
    assert 0 < scored < pipe.learner.events_learned
    assert pipe.publisher.published > 0, "candidates are still published while behind"


def test_keeping_up_every_batch_is_scored_by_the_served_version(tmp_path):
    cfg = sea_config(tmp_path, learning={"publish_budget": 0.05})
    svc, pipe, src, clock = build(cfg, clock=WorkClock(0.0005))
    svc.restore()
    events = list(DriftingSEA(seed=65).take(2000))
    for i in range(0, 2000, 100):  # live: the lag never passes learning.replay.max_lag
        src.append(events[i : i + 100])
        run_for(svc, clock, 0.05)
    run_for(svc, clock, 1.0)  # the last partial batch
    assert not pipe.publisher.behind
    assert pipe.publisher.budget.skipped == 0
    assert pipe.publisher.served_metrics.seen == pipe.learner.events_learned == 2000
