"""Joining the group, and reading a topic whole without one.

A learner polls briefly between batches it is busy learning. kafka-python 3.0 drops a group join
that completes while no poll is waiting and starts another, so a member polled like that could
stay out of its group for good; the event source waits out its join inside ``poll()``.

The label topic and the prediction log are read whole, each partition assigned by learnd: no
group join to wait for, every partition read, positions resumed from learnd's own offsets or from
the committed ones.
"""

from __future__ import annotations

import time

import pytest

from learnd.adapters.kafka.clients import client_source_class
from learnd.adapters.kafka.topics import ensure_topics
from learnd.daemon.config import KafkaConfig

from .conftest import wait_for
from .test_kafka_daemon import produce

pytestmark = pytest.mark.integration


def _source(kafka_section, **kw):
    cfg = KafkaConfig.model_validate({**kafka_section, "auto_offset_reset": "earliest"})
    return client_source_class(cfg)(cfg, **kw), cfg


def test_a_member_busy_between_brief_polls_joins_its_group(kafka_section):
    source, cfg = _source(kafka_section)
    ensure_topics(cfg, partitions=2)
    produce(cfg.bootstrap_servers, cfg.topic, [b"x"] * 20, partitions=2)
    got = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 20 and time.monotonic() < deadline:
            got += source.poll(0.01)
            time.sleep(0.5)  # learning: the member is outside poll() 98% of the time
        assert source.assigned() == 2
        assert len(got) == 20
        if cfg.client == "kafka-python":  # the fetch wait reaches the client (confluent: below)
            assert source.consumer.config["fetch_max_wait_ms"] == cfg.fetch_max_wait_ms
    finally:
        source.close()


def test_assign_all_reads_every_partition_and_resumes_where_told(kafka_section):
    source, cfg = _source(kafka_section, assign_all=True)
    ensure_topics(cfg, partitions=3)
    produce(cfg.bootstrap_servers, cfg.topic, [b"%d" % i for i in range(30)], partitions=3)
    got = []
    try:
        # polls that never wait still read: nothing to join
        wait_for(lambda: got.extend(source.poll(0.0)) or len(got) >= 30, 30, what="30 records")
        assert source.assigned() == 3
        assert sorted(int(r.value) for r in got) == list(range(30))
        ends = {p: o for p, o in source.ends().items()}
        assert ends == {0: 10, 1: 10, 2: 10}
        source.commit({0: 10, 1: 4, 2: 10})  # as after a checkpoint: the group's offsets
    finally:
        source.close()

    # A restart: partition 1 resumes at the committed offset, 0 at learnd's own position (from
    # its checkpoint, given before the first poll), 2 at the committed end.
    again, _ = _source(kafka_section, assign_all=True)
    again.seek({0: 7})
    got = []
    try:
        wait_for(lambda: got.extend(again.poll(0.0)) or len(got) >= 9, 30, what="9 records")
        time.sleep(0.5)
        got += again.poll(0.2)
        by_partition = sorted((r.partition, r.offset) for r in got)
        assert by_partition == [(0, 7), (0, 8), (0, 9)] + [(1, o) for o in range(4, 10)]
    finally:
        again.close()


def test_assign_all_waits_for_a_topic_that_does_not_exist_yet(kafka_section):
    source, cfg = _source(kafka_section, assign_all=True)
    got = []
    try:
        assert source.poll(0.0) == [] and source.assigned() == 0
        ensure_topics(cfg, partitions=2)
        produce(cfg.bootstrap_servers, cfg.topic, [b"a", b"b"], partitions=2)
        wait_for(lambda: got.extend(source.poll(0.0)) or len(got) >= 2, 30, what="2 records")
        assert source.assigned() == 2
    finally:
        source.close()
