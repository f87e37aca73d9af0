"""The label join's core: every row and every label ends exactly one way, with exact counts."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from learnd.daemon.config import LearndConfig
from learnd.daemon.config_labels import LabelsConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.events.record import Record
from learnd.daemon.labels.join import Joiner, Served
from learnd.daemon.labels.stage import JoinStage


def feat(i: int) -> tuple[np.ndarray, Record]:
    return np.array([i, -i], np.float32), Record("ev", 0, i, None)


def lab(i: int, offset: int | None = None) -> Record:
    return Record("lab", 1, i if offset is None else offset, b'{"id": %d}' % i)


def joiner(**kw) -> Joiner:
    default_y = kw.pop("default_y", None)
    return Joiner(LabelsConfig(mode="join", **kw), dim=2, default_y=default_y)


def test_match_learns_the_row_with_its_label_and_the_delay():
    j = joiner(ttl_s=100)
    for i in range(5):
        j.add_features(i, *feat(i), now=float(i))
    for i in (3, 1):
        j.add_label(i, float(i % 2), lab(i), now=10.0)
    out = j.take()
    assert out.ids == (3, 1) and out.y == [1.0, 1.0]
    assert out.X.tolist() == [[3, -3], [1, -1]]
    assert out.offsets.tolist() == [3, 1] and out.delays == [7.0, 9.0]
    assert j.pending == 3 and j.outcomes["matched"] == 2


@pytest.mark.parametrize("policy", ["drop", "learn"])
def test_ttl_expiry_with_both_policies(policy):
    j = joiner(
        ttl_s=10,
        **(
            {"on_expiry": "learn", "default_label": 0, "default_y": 0.0}
            if policy == "learn"
            else {}
        ),
    )
    for i in range(10):
        j.add_features(i, *feat(i), now=float(i))  # row i arrives at t=i
    j.expire(now=14.5)  # rows 0..4 waited >= 10 s
    out = j.take()
    assert j.pending == 5
    if policy == "drop":
        assert out.ids == () and j.outcomes["expired"] == 5 and j.outcomes["default_label"] == 0
    else:
        assert out.ids == (0, 1, 2, 3, 4) and out.y == [0.0] * 5
        assert j.outcomes["default_label"] == 5 and j.outcomes["expired"] == 0
    # a label for an expired row is never learned: an orphan (drop) or a duplicate (learned)
    j.add_label(2, 1.0, lab(2), now=15.0)
    j.expire(now=26.0)
    out = j.take()
    assert out.ids == (() if policy == "drop" else (5, 6, 7, 8, 9))
    reason = "orphan_label" if policy == "drop" else "duplicate_label"
    assert [(r.offset, why) for r, why, _ in out.dead_letters] == [(2, reason)]


def test_bound_on_pending_rows_expires_the_oldest_early():
    j = joiner(max_pending=100)
    for i in range(250):
        j.add_features(i, *feat(i), now=0.0)
    assert j.pending == 100 and j.evicted == 150 and j.outcomes["expired"] == 150
    for i in (0, 149, 150, 249):
        j.add_label(i, 1.0, lab(i), now=1.0)
    out = j.take()
    assert out.ids == (150, 249)
    assert j.outcomes["orphan"] == 0 and j.early_labels == 2  # 0 and 149 wait, as early labels


def test_labels_before_features_are_held_and_bounded():
    j = joiner(max_early_labels=3, ttl_s=50)
    for i in range(5):
        j.add_label(i, 1.0, lab(i), now=0.0)
    out = j.take()
    assert j.early_labels == 3 and [r.offset for r, *_ in out.dead_letters] == [0, 1]
    assert {why for _, why, _ in out.dead_letters} == {"orphan_label"}
    for i in range(5):
        j.add_features(i, *feat(i), now=2.0)
    out = j.take()
    assert out.ids == (2, 3, 4) and out.delays == [0.0, 0.0, 0.0]
    assert j.pending == 2 and j.outcomes["matched"] == 3 and j.outcomes["orphan"] == 2


def test_early_labels_expire_as_orphans():
    j = joiner(ttl_s=5)
    j.add_label("x", 1.0, lab(0), now=0.0)
    j.add_label("y", 1.0, lab(1), now=3.0)
    j.expire(now=6.0)
    out = j.take()
    assert [r.offset for r, *_ in out.dead_letters] == [0] and j.early_labels == 1
    assert j.outcomes["orphan"] == 1


def test_duplicates_are_dead_lettered_never_learned_twice():
    j = joiner()
    j.add_features(1, *feat(1), now=0.0)
    j.add_features(1, *feat(1), now=0.0)  # duplicate features while pending
    j.add_label(1, 1.0, lab(1, 10), now=1.0)
    j.add_label(1, 0.0, lab(1, 11), now=1.0)  # duplicate label after the match
    j.add_features(1, *feat(1), now=2.0)  # features again after the match
    j.add_label(2, 1.0, lab(2, 12), now=1.0)
    j.add_label(2, 1.0, lab(2, 13), now=1.0)  # duplicate early label
    out = j.take()
    assert out.ids == (1,)
    assert [why for _, why, _ in out.dead_letters] == [
        "duplicate_id",
        "duplicate_label",
        "duplicate_id",
        "duplicate_label",
    ]
    assert j.outcomes["duplicate"] == 4 and j.outcomes["matched"] == 1


def test_state_round_trip_continues_exactly():
    j = joiner(ttl_s=10, max_early_labels=10)
    for i in range(6):
        j.add_features(i, *feat(i), now=float(i), served=Served(7, np.array([0.25], np.float32)))
    j.add_label(0, 1.0, lab(0), now=6.0)
    j.add_label("early", 1.0, Record("lab", 0, 3, b'{"id": "early"}'), now=6.0)
    j.take()
    k = joiner(ttl_s=10, max_early_labels=10)
    k.load_state_dict(j.state_dict())
    assert (k.pending, k.early_labels, k.outcomes) == (j.pending, j.early_labels, j.outcomes)
    for m in (j, k):
        m.add_label(0, 1.0, lab(0), now=7.0)  # still known as matched: a duplicate
        m.add_label(4, 0.0, lab(4), now=7.0)
        m.expire(now=12.5)  # rows 1 and 2 expire, 3 and 5 stay
    a, b = j.take(), k.take()
    assert a.ids == b.ids == (4,) and a.delays == b.delays == [3.0]
    assert [s.version for s, _ in b.served] == [7]
    assert j.outcomes == k.outcomes and k.outcomes["expired"] == 2 and k.pending == 2


def test_config_validation_names_fields():
    with pytest.raises(ValidationError, match="labels.default_label"):
        LabelsConfig(mode="join", on_expiry="learn")
    with pytest.raises(ValidationError, match="kafka.labels_topic"):
        LearndConfig.model_validate(
            {
                "schema": {"task": "binary", "n_features": 2},
                "kafka": {"labels_topic": "learnd.events"},
            }
        )
    cfg = LearndConfig.model_validate(
        {
            "schema": {"task": "binary", "n_features": 2},
            "labels": {"mode": "join", "on_expiry": "learn", "default_label": "yes"},
        }
    )
    with pytest.raises(StartupError, match="labels.default_label 'yes' is invalid"):
        JoinStage(cfg)


def _pipeline(tmp_path, wall, **labels):
    from learnd.adapters.fakes import ListDeadLetters, ManualClock
    from learnd.daemon.learning.learner import Learner
    from learnd.daemon.pipeline import Pipeline
    from tests.conftest import sea_config

    cfg = sea_config(
        tmp_path,
        labels={"mode": "join", **labels},
        checkpoint={"audit_ids": True},
        learning={"batch_size": 4},
    )
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    dead = ListDeadLetters()
    return Pipeline(cfg, learner, dead, ManualClock(), wall=wall), dead, cfg


def _event(i: int, label: bool = False) -> bytes:
    import orjson

    obj = {"id": i, "features": {"x1": 1.0 * i, "x2": 2.0, "x3": 3.0}}
    return orjson.dumps({**obj, "label": 1} if label else obj)


def test_pipeline_learns_joined_events_once_across_a_checkpoint(tmp_path):
    from learnd.adapters.fakes import ManualClock

    wall = ManualClock(1000.0)
    pipe, dead, cfg = _pipeline(tmp_path, wall, ttl_s=60)
    ev, lt = cfg.kafka.topic, cfg.kafka.labels_topic
    label = b'{"id": %d, "label": 0, "ts": 1}'
    recs = [Record(ev, 0, i, _event(i, label=i == 0)) for i in range(6)]  # 0 inline, 1..5 not
    recs += [Record(lt, 0, k, label % i) for k, i in enumerate((2, 3, 9, 3))]  # 9 early, 3 dup
    pipe.process(recs)
    pipe.flush()
    assert pipe.positions == {0: 6} and pipe.join.positions[lt] == {0: 4}
    assert pipe.learner.events_learned == 3  # 0 inline, 2 and 3 joined
    assert [(r.topic, r.offset, why) for r, why, _ in dead.sent] == [(lt, 3, "duplicate_label")]
    state = pipe.state_dict()
    again, _, _ = _pipeline(tmp_path, wall, ttl_s=60)
    again.load_state_dict(state)
    wall.advance(30)
    again.process([Record(lt, 0, 4, label % 4), Record(ev, 0, 6, _event(9))])
    again.flush()
    assert again.audit.tolist() == [1, 0, 1, 1, 1, 0, 0, 0, 0, 1]
    wall.advance(31)
    again.tick()  # 1 and 5 expire (dropped)
    assert again.join.joiner.outcomes["expired"] == 2 and again.join.joiner.pending == 0


def test_join_source_hands_labels_over_and_seeks_and_commits_the_checkpointed_positions(tmp_path):
    from learnd.adapters.fakes import ListSource, ManualClock, MemoryCheckpointStore
    from learnd.adapters.kafka.join_source import JoinSource
    from learnd.daemon.service import Service

    wall = ManualClock(0.0)
    pipe, _, cfg = _pipeline(tmp_path, wall)
    events, labels = ListSource(cfg.kafka.topic), ListSource(cfg.kafka.labels_topic)
    preds = ListSource(cfg.kafka.predictions_topic)
    events.append([_event(i) for i in range(8)])
    labels.append([{"id": i, "label": 1} for i in range(5)], partition=1)
    src = JoinSource(events, {cfg.kafka.labels_topic: labels, "p": preds}, pipe.join)
    store = MemoryCheckpointStore()
    svc = Service(pipe, src, store, cfg.checkpoint, clock=ManualClock())
    svc.restore()
    svc.step()
    svc.checkpoint()
    assert pipe.learner.events_learned == 5 and pipe.join.joiner.pending == 3
    assert labels.committed == {1: 5} and events.committed == {0: 8} and preds.committed == {}
    labels.next = {1: 0}  # a restarted consumer would start anywhere: the checkpoint decides
    again, _, _ = _pipeline(tmp_path, wall)
    src2 = JoinSource(events, {cfg.kafka.labels_topic: labels}, again.join)
    Service(again, src2, store, cfg.checkpoint, clock=ManualClock()).restore()
    assert labels.next == {1: 5}


def test_join_metrics_read_the_join_state_at_scrape_time(tmp_path):
    from prometheus_client import CollectorRegistry

    from learnd.adapters.fakes import ManualClock
    from learnd.adapters.metrics.join import JoinCollector

    wall = ManualClock(0.0)
    pipe, _, cfg = _pipeline(tmp_path, wall, ttl_s=10)
    ev, lt = cfg.kafka.topic, cfg.kafka.labels_topic
    pipe.process([Record(ev, 0, i, _event(i)) for i in range(4)])
    wall.advance(2.0)
    pipe.process([Record(lt, 0, k, b'{"id": %d, "label": 1}' % i) for k, i in enumerate((0, 0, 7))])
    registry = CollectorRegistry()
    registry.register(JoinCollector(pipe.join))
    got = registry.get_sample_value
    assert [got("learnd_join_total", {"outcome": o}) for o in ("matched", "duplicate")] == [1, 1]
    assert got("learnd_join_labels_total") == 3 and got("learnd_join_pending") == 3
    assert got("learnd_join_early_labels") == 1
    assert (
        got("learnd_label_delay_seconds_count") == 1 and got("learnd_label_delay_seconds_sum") == 2
    )
    assert got("learnd_label_delay_seconds_bucket", {"le": "1.0"}) == 0
    assert got("learnd_label_delay_seconds_bucket", {"le": "5.0"}) == 1


def test_labels_ahead_of_a_backlog_wait_in_the_log_not_as_dropped_orphans(tmp_path):
    from learnd.adapters.fakes import ListSource, ManualClock, MemoryCheckpointStore
    from learnd.adapters.kafka.join_source import JoinSource
    from learnd.daemon.service import Service

    wall = ManualClock(0.0)
    pipe, dead, cfg = _pipeline(tmp_path, wall, max_early_labels=10)
    events, labels = ListSource(cfg.kafka.topic, batch=4), ListSource(cfg.kafka.labels_topic, 4)
    events.append([_event(i) for i in range(40)])
    # the newest labels first: each is early until the event backlog reaches its features
    labels.append([{"id": i, "label": 1} for i in reversed(range(40))])
    src = JoinSource(events, {cfg.kafka.labels_topic: labels}, pipe.join, per_poll=4)
    svc = Service(pipe, src, MemoryCheckpointStore(), cfg.checkpoint, clock=ManualClock())
    svc.restore()
    most_early = 0
    for _ in range(30):
        svc.step()
        most_early = max(most_early, pipe.join.joiner.early_labels)
    svc.checkpoint()
    joiner = pipe.join.joiner
    assert joiner.outcomes["matched"] == 40 and pipe.learner.events_learned == 40
    assert dead.sent == [] and most_early <= 10 and src.labels_paused > 0
    # once the events are caught up, labels are read whatever the count of early ones
    assert pipe.join.reads_labels(events_behind=0, per_poll=10**6)
    assert not pipe.join.reads_labels(events_behind=1, per_poll=11)
