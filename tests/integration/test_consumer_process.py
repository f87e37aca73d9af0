"""The consumer process (kafka.consumer_process, the default): a killed one is replaced without
loss or duplicates, its logs come out of the daemon's loggers, and it stops with the daemon."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from learnd.adapters.kafka.topics import ensure_topics
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config

from .conftest import wait_for
from .test_kafka_daemon import learned, produce

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_killed_consumer_process_is_replaced_nothing_lost_nothing_twice(
    start_daemon, kafka_section, caplog
):
    caplog.set_level(logging.INFO)
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    events = list(DriftingSEA(seed=21).take(22_000))
    produce(bootstrap, topic, events[:2000])
    d = start_daemon(kafka={"max_poll_records": 100})
    wait_for(learned(d, 2000), 60, what="first 2000 learned")
    first = d.source.pid
    # the child's own log lines come out of the daemon's loggers, marked with its pid
    assert any(
        r.getMessage().startswith("first record of partition") and r.process == first
        for r in caplog.records
    )
    os.kill(first, signal.SIGKILL)  # idle: everything it read was handed over
    produce(bootstrap, topic, events[2000:])
    wait_for(lambda: d.source.restarts == 1, 30, what="the consumer process replaced")
    wait_for(learned(d, 5000), 60, what="learning again")
    second = d.source.pid
    assert second not in (None, first)
    os.kill(second, signal.SIGKILL)  # most likely mid-stream, with batches in the pipe
    wait_for(lambda: d.source.restarts == 2, 30, what="replaced again")
    wait_for(learned(d, 22_000), 90, what="all 22,000 learned")
    wait_for(lambda: sum(d.source.lag().values()) == 0 and d.source.lag(), 10, what="lag 0")
    restarts = [r for r in caplog.records if getattr(r, "event", None) == "consumer_restart"]
    assert len(restarts) == 2 and "exited (code -9)" in restarts[0].getMessage()
    time.sleep(1.5)  # give a duplicate delivery the chance to show up
    assert d.pipeline.learner.events_learned == 22_000
    assert d.pipeline.positions == {0: 11_000, 1: 11_000}
    third = d.source.pid
    d.stop()
    d.join(30)
    assert _gone(third), "the consumer process stops with the daemon"
    assert d.source.pid is None


def test_a_stop_signal_for_the_process_group_leaves_the_consumer_to_the_daemon(
    start_daemon, kafka_section, caplog
):
    """systemd (KillMode=control-group), `timeout` and `kill -- -PGID` send SIGTERM to every
    process of the group at once, and Ctrl-C sends SIGINT: the consumer process ignores both,
    so the daemon's shutdown still has it to commit and leave the group with, and nothing is
    reported lost or restarted."""
    caplog.set_level(logging.INFO)
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    produce(bootstrap, topic, list(DriftingSEA(seed=22).take(2000)))
    d = start_daemon()
    wait_for(learned(d, 2000), 60, what="2000 learned")
    child = d.source.pid
    os.kill(child, signal.SIGTERM)
    os.kill(child, signal.SIGINT)
    time.sleep(1.0)
    assert not _gone(child) and d.source.restarts == 0
    d.stop()
    d.join(30)
    assert _gone(child)
    assert not [r for r in caplog.records if getattr(r, "event", None) == "consumer_restart"]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=kafka_section["group_id"], enable_auto_commit=False
    )
    committed = {p: consumer.committed(TopicPartition(topic, p)) for p in (0, 1)}
    consumer.close()
    assert committed == {0: 1000, 1: 1000} == d.pipeline.positions


def test_with_the_join_a_killed_consumer_process_loses_no_row_and_learns_none_twice(
    start_daemon, kafka_section, tmp_path
):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    labels_topic, preds_topic = f"{topic}-labels", f"{topic}-predictions"
    for t in (labels_topic, preds_topic):
        ensure_topics(sea_config(tmp_path, kafka={**kafka_section, "topic": t}).kafka, partitions=2)
    n = 6000
    events = list(DriftingSEA(seed=22).take(n))
    unlabelled = [{"id": e["id"], "features": e["features"]} for e in events]
    labels = [{"id": e["id"], "label": e["label"]} for e in reversed(events)]
    produce(bootstrap, labels_topic, labels[:1000])  # these come before their features
    produce(bootstrap, topic, unlabelled[:2000])
    d = start_daemon(
        kafka={
            "max_poll_records": 100,
            "labels_topic": labels_topic,
            "predictions_topic": preds_topic,
        },
        labels={"mode": "join", "ttl_s": 600},
        checkpoint={"audit_ids": True},
    )
    wait_for(lambda: d.pipeline.join.labels == 1000, 60, what="the first 1000 labels")
    first = d.source.pid
    os.kill(first, signal.SIGKILL)
    produce(bootstrap, labels_topic, labels[1000:])
    produce(bootstrap, topic, unlabelled[2000:])
    wait_for(lambda: d.source.restarts == 1, 30, what="the consumer process replaced")
    wait_for(learned(d, 2500), 60, what="learning again")
    os.kill(d.source.pid, signal.SIGKILL)  # most likely mid-stream, with batches in the pipe
    wait_for(lambda: d.source.restarts == 2, 30, what="replaced again")
    wait_for(learned(d, n), 90, what=f"all {n:,} joined and learned")
    time.sleep(1.5)  # give a duplicate delivery the chance to show up
    join = d.pipeline.join
    assert d.pipeline.learner.events_learned == n and join.labels == n
    assert join.joiner.outcomes["matched"] == n and join.joiner.outcomes["duplicate"] == 0
    assert join.positions[labels_topic] == {0: n // 2, 1: n // 2}
    audit = d.pipeline.audit
    assert audit is not None and (audit[: max(e["id"] for e in events) + 1] <= 1).all()
    wait_for(lambda: d.source.label_lag() == 0, 10, what="label lag 0")
