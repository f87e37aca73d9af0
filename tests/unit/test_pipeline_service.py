from __future__ import annotations

import pickle

import numpy as np
import pytest

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.errors import StartupError
from learnd.daemon.events.decoder import EventDecoder
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from tests.conftest import sea_config


def build(cfg, source=None, store=None, clock=None, device="cpu"):
    clock = clock or ManualClock()
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, device)
    dead = ListDeadLetters()
    pipe = Pipeline(cfg, learner, dead, clock)
    source = source or ListSource()
    svc = Service(pipe, source, store or MemoryCheckpointStore(), cfg.checkpoint, clock=clock)
    return svc, pipe, source, dead


def drain(svc, source):
    while source.remaining():
        svc.step()


def test_valid_learned_invalid_dead_lettered_positions_exact(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, dead = build(cfg)
    src.append(list(DriftingSEA(seed=2).take(1000)), partition=0)
    src.append(
        [b"nope", {"features": [1, 2], "label": 1}, *DriftingSEA(seed=3).take(10)], partition=1
    )
    svc.restore()
    drain(svc, src)
    svc.checkpoint()
    assert pipe.learner.events_learned == 1010 and pipe.valid == 1010
    assert [(r.partition, r.offset, reason) for r, reason, _ in dead.sent] == [
        (1, 0, "not_json"),
        (1, 1, "wrong_dimension"),
    ]
    assert dead.flushed == 2
    assert pipe.positions == {0: 1000, 1: 12} == src.committed


def test_partial_batch_is_learned_after_max_age(tmp_path):
    cfg = sea_config(tmp_path, learning={"batch_size": 64, "batch_max_age_s": 0.5})
    clock = ManualClock()
    svc, pipe, src, _ = build(cfg, clock=clock)
    src.append(list(DriftingSEA().take(10)))
    svc.step()
    assert pipe.learner.events_learned == 0
    clock.advance(0.6)
    svc.step()
    assert pipe.learner.events_learned == 10


def test_restart_resumes_from_checkpoint_nothing_lost_nothing_twice(tmp_path, device):
    cfg = sea_config(tmp_path, learning={"device": device})
    events = list(DriftingSEA(seed=4).take(3000))
    store = LocalCheckpointStore(tmp_path / "ck")
    src = ListSource()
    src.append(events[:2000])
    svc, pipe, _, _ = build(cfg, src, store, device=device)
    svc.restore()
    drain(svc, src)
    svc.checkpoint()
    v_before = pipe.ref.current.version
    # the log grows while we are down; a new process starts on the same log
    src.append(events[2000:])
    src.next = {0: 0}  # a fresh consumer would start anywhere: the checkpoint must decide
    svc2, pipe2, _, _ = build(cfg, src, store, device="cpu")  # a GPU checkpoint loads anywhere
    svc2.restore()
    assert src.next == {0: 2000}
    # the model served before, again, under a number the first run could not have used
    again = pipe2.ref.current
    assert again.version > v_before and again.trained_events == pipe.ref.current.trained_events
    drain(svc2, src)
    svc2.checkpoint()
    assert pipe2.learner.events_learned == 3000 and pipe2.positions == {0: 3000}


def test_restart_is_equivalent_to_running_straight(tmp_path):
    # Replay on throughout (whatever the lag), so that its window and generator must come back
    # from the checkpoint exactly too.
    cfg = sea_config(tmp_path, learning={"deterministic": True, "replay": {"max_lag": 10**9}})
    events = list(DriftingSEA(seed=5, switch_every=2500).take(6000))
    straight_src = ListSource(batch=100)
    straight_src.append(events)
    straight, sp, _, _ = build(cfg, straight_src)
    straight.restore()
    drain(straight, straight_src)
    straight.checkpoint()

    split = (
        93 * cfg.learning.batch_size
    )  # a batch boundary: the checkpoint flushes no partial batch
    src = ListSource(batch=100)
    src.append(events[:split])
    store = LocalCheckpointStore(tmp_path / "eq")
    first, _, _, _ = build(cfg, src, store)
    first.restore()
    drain(first, src)
    first.checkpoint()
    src.append(events[split:])
    second, p2, _, _ = build(cfg, src, store)
    second.restore()
    drain(second, src)
    second.checkpoint()
    a, b = sp.learner.state_dict(), p2.learner.state_dict()
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k].numpy(), b["model"][k].numpy())
    for pid, st in a["optimizer"]["state"].items():
        np.testing.assert_array_equal(
            st["exp_avg"].numpy(), b["optimizer"]["state"][pid]["exp_avg"].numpy()
        )
    assert a["schedule"] == b["schedule"] and sp.drift.alarms == p2.drift.alarms
    assert sp.input_drift.alarms == p2.input_drift.alarms
    assert p2.input_drift.estimates() == pytest.approx(sp.input_drift.estimates(), abs=0.05)


def test_checkpoint_for_another_schema_refuses_to_start(tmp_path):
    store = MemoryCheckpointStore()
    svc, _, src, _ = build(sea_config(tmp_path), store=store)
    svc.restore()
    svc.checkpoint()
    other = sea_config(tmp_path, model={"hidden": [8]})
    svc2, _, _, _ = build(other, store=store)
    with pytest.raises(StartupError, match="Point checkpoint.dir elsewhere"):
        svc2.restore()


class FullDisk(MemoryCheckpointStore):
    def save(self, state):
        raise OSError(28, "No space left on device")


def test_failed_checkpoint_keeps_running_and_does_not_commit(tmp_path):
    cfg = sea_config(tmp_path)
    svc, pipe, src, _ = build(cfg, store=FullDisk())
    src.append(list(DriftingSEA().take(100)))
    svc.restore()
    drain(svc, src)
    assert svc.checkpoint() is False
    # the first failure: the checkpoint at start-up that reserves version numbers
    assert svc.health.checkpoint_failures == 2 and svc.health.as_dict()["status"] == "degraded"
    assert src.committed == {}
    assert pipe.ref.current is not None


def test_run_stops_gracefully_with_final_checkpoint(tmp_path):
    cfg = sea_config(tmp_path)
    store = MemoryCheckpointStore()
    svc, pipe, src, _ = build(cfg, store=store)
    src.append(list(DriftingSEA().take(500)))
    svc.restore()

    steps = {"n": 0}
    orig = svc.step

    def counting_step():
        orig()
        steps["n"] += 1
        if not src.remaining():
            svc.stop()

    svc.step = counting_step
    svc.run()
    assert src.closed and store.saved[-1]["positions"] == {0: 500}
    assert store.saved[-1]["learner"]["events_learned"] == 500


def test_metrics_series_stay_bounded_with_100k_random_ids(tmp_path):
    """RELIABILITY test 18: nothing is labelled by id, so the series count does not grow."""
    import uuid

    from prometheus_client import CollectorRegistry

    from learnd.adapters.metrics.prometheus import LearndCollector

    cfg = sea_config(tmp_path)
    svc, pipe, src, _ = build(cfg)
    registry = CollectorRegistry()
    registry.register(LearndCollector(pipe, svc.health, src))
    svc.restore()

    def series():
        return sum(len(m.samples) for m in registry.collect())

    events = [{**e, "id": uuid.uuid4().hex} for e in DriftingSEA(seed=8).take(1000)]
    src.append(events)
    drain(svc, src)
    after_1k = series()
    src.append([{**e, "id": uuid.uuid4().hex} for e in DriftingSEA(seed=9).take(99_000)])
    drain(svc, src)
    assert pipe.valid == 100_000
    assert series() == after_1k < 100


def _runs(sizes):
    """Run-length form of a sequence: [(value, count), ...]."""
    out = []
    for s in sizes:
        if out and out[-1][0] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return [tuple(r) for r in out]


def test_catch_up_batches_grow_while_short_of_the_rate_target_and_shrink_as_the_lag_falls(
    tmp_path,
):
    cfg = sea_config(
        tmp_path,
        learning={
            "catch_up_lag": 2000,
            "catch_up_batch_size": 256,
            "catch_up_s": 0.1,
            "batch_size": 32,
        },
    )
    clock = ManualClock()
    src = ListSource(batch=500)
    svc, pipe, _, _ = build(cfg, src, clock=clock)
    sizes = []
    learn_many = pipe.learner.learn_many

    def costed(X, y):  # a step costs 1 ms plus 20 us an event: 19.5k/s at 32, 41.8k/s at 256
        sizes.append(len(y))
        clock.advance(1e-3 + 2e-5 * len(y))
        return learn_many(X, y)

    pipe.learner.learn_many = costed
    replay = pipe.learner.replay

    def costed_replay(steps=None):  # rehearsal steps are batches of 32
        done = replay(steps)
        clock.advance(done * (1e-3 + 2e-5 * 32))
        return done

    pipe.learner.replay = costed_replay
    src.append(list(DriftingSEA(seed=9).take(12_000)))
    svc.restore()
    lags = []
    while src.remaining():
        svc.step()
        lags.append((pipe.lag, *pipe.pace.rung))
    svc.checkpoint()
    assert pipe.learner.events_learned == 12_000 == sum(sizes) and len(lags) == 24
    # 12,000 behind at the first poll: 32 (nothing measured yet); then 115k/s wanted, and one
    # rung up per poll while the rung in use measures short (19.5k/s at 32, 28.1k at 64, 36.0k
    # at 128), up to the largest, 256
    # (lag once the poll is learned, batch size, rehearsal) per poll. 12,000 behind at the
    # first: batches of 32 with rehearsal (nothing measured yet; 2.2k/s measured: 8 refill
    # steps of 1.64 ms each); then 115k/s wanted, one rung up per poll while the rung in use
    # measures short (19.5k/s at 32, 28.1k at 64, 36.0k at 128), up to the largest, 256
    # (lag once the poll is learned, batch size, rehearsal) per poll. 12,000 behind at the
    # first: nothing measured yet, so one rung up from rehearsed batches of 32; then 115k/s
    # wanted, one rung up per poll while the rung in use measures short (19.5k/s at 32, 28.1k
    # at 64, 36.0k at 128), up to the largest, 256
    assert lags[:5] == [
        (11_520, 32, False),
        (11_008, 64, False),
        (10_624, 128, False),
        (10_112, 256, False),
        (9_600, 256, False),
    ]
    # down a rung once the one below was measured 1.25x as fast as lag / catch_up_s: 128 at
    # 2,688 behind (36.0k/s >= 1.25 x 26.9k/s), 64 at 2,048, 32 at 1,536; rehearsal was never
    # measured, so not taken while catching up; live below 1,000 (half of catch_up_lag)
    assert lags[-6:] == [
        (2_688, 256, False),
        (2_048, 128, False),
        (1_536, 64, False),
        (1_024, 32, False),
        (512, 32, False),
        (0, 32, True),
    ]
    assert _runs(sizes) == [(32, 15), (64, 8), (128, 3), (256, 31), (128, 5), (64, 8), (32, 48)]
    assert not pipe.pace.catching_up


def test_catch_up_batches_smaller_than_the_batch_size_are_refused(tmp_path):
    with pytest.raises(ValueError, match="catch_up_batch_size"):
        sea_config(tmp_path, learning={"batch_size": 64, "catch_up_batch_size": 32})


class _DecodingSource(ListSource):
    """Decodes where it reads and hands batches over pickled, as the consumer process does."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def poll(self, timeout_s):
        records = super().poll(timeout_s)
        return pickle.loads(pickle.dumps(self.decoder.decode(records))) if records else []


def test_batches_decoded_by_the_source_are_learned_exactly_as_raw_records(tmp_path):
    cfg = sea_config(tmp_path)
    runs = []
    for decoding in (False, True):
        src = _DecodingSource(EventDecoder(cfg.schema_)) if decoding else ListSource()
        svc, pipe, src, dead = build(cfg, source=src)
        src.append(list(DriftingSEA(seed=2).take(3000)), partition=0)
        src.append([b"nope", *DriftingSEA(seed=3).take(700), {"features": [1], "label": 1}], 1)
        svc.restore()
        drain(svc, src)
        svc.checkpoint()
        X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
        runs.append(
            (
                pipe.learner.predict_many(X),
                [(r.partition, r.offset, reason) for r, reason, _ in dead.sent],
                dict(pipe.positions),
                dict(src.committed),
                pipe.learner.events_learned,
            )
        )
    (p0, *rest0), (p1, *rest1) = runs
    np.testing.assert_array_equal(p0, p1)
    assert rest0 == rest1
    letters, positions, committed, learned = rest1
    assert letters == [(1, 0, "not_json"), (1, 701, "wrong_dimension")]
    assert positions == {0: 3000, 1: 702} == committed and learned == 3700


def test_the_lag_counts_events_batched_and_waiting_per_partition(tmp_path):
    from learnd.adapters.metrics.prometheus import LearndCollector

    cfg = sea_config(tmp_path, learning={"catch_up_lag": None, "batch_size": 32})
    src = ListSource(batch=100)
    svc, pipe, _, _ = build(cfg, src)
    events = list(DriftingSEA(seed=4).take(1000))
    src.append(events[:600], partition=0)
    src.append(events[600:], partition=1)
    svc.restore()
    collector = LearndCollector(pipe, svc.health, src)

    def lag():
        family = next(m for m in collector.collect() if m.name == "learnd_consumer_lag")
        return {s.labels["partition"]: s.value for s in family.samples}

    svc.step()  # 100 handed over from each partition: 192 learned in batches of 32, 8 wait
    assert pipe.learner.events_learned == 192
    assert sum(lag().values()) == 1000 - 192 == pipe.lag
    assert lag() == {"0": 500 + 0, "1": 300 + 8}  # the waiting 8 are partition 1's
    svc.step()
    assert pipe.learner.events_learned == 384 and sum(lag().values()) == 1000 - 384
