"""RELIABILITY test 6: a checkpointed offset that no longer exists is counted, never skipped silently.

The topic is deleted and recreated with fewer records behind learnd's back, so the checkpointed
position lies beyond the new log end. (tansu does not implement DeleteRecords, the other way to
put a position out of range; the repositioning arithmetic for that case is a doctest of
``learnd.adapters.kafka.source_state.out_of_range_gap``.)
"""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from learnd.adapters.kafka.common import client_options
from learnd.adapters.kafka.topics import ensure_topics
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config

from .conftest import wait_for
from .test_kafka_daemon import learned, produce

pytestmark = pytest.mark.integration


def test_position_beyond_a_recreated_log_is_counted_and_repositioned(start_daemon, kafka_section):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    produce(bootstrap, topic, list(DriftingSEA(seed=81).take(1000)), partitions=1)
    d1 = start_daemon()
    wait_for(learned(d1, 1000), 60, what="1000 learned")
    d1.stop()
    d1.join(30)

    admin = KafkaAdminClient(**client_options(d1.cfg.kafka))
    admin.delete_topics([topic])
    wait_for(lambda: topic not in admin.list_topics(), 10, what="topic deleted")
    time.sleep(0.5)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    produce(bootstrap, topic, list(DriftingSEA(seed=82).take(300)), partitions=1)

    d2 = start_daemon()
    assert d2.pipeline.positions == {0: 1000}, "restored from the checkpoint"
    wait_for(lambda: d2.source.out_of_range_resets >= 1, 30, what="out of range noticed")
    wait_for(learned(d2, 1300), 30, what="the recreated log learned")
    assert d2.source.out_of_range_resets == 1
    assert d2.source.skipped_records == 0  # auto_offset_reset=earliest rewinds: nothing skipped
    assert d2.pipeline.positions == {0: 300}


def test_latest_skips_what_was_there_before_and_learns_what_comes_after(
    start_daemon, kafka_section, tmp_path
):
    """auto_offset_reset='latest' on a group with no offsets: the records already in the log
    are not learned, every record produced after the partitions were placed is."""
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    kafka_section["auto_offset_reset"] = "latest"
    ensure_topics(sea_config(tmp_path, kafka=kafka_section).kafka, partitions=2)
    # One record per batch: tansu answers ListOffsets(latest) with the last *batch's* base
    # offset + 1 (1 for a partition holding 250 records in one batch), so batched records would
    # sit beyond its "end". Apache Kafka answers right either way.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i, e in enumerate(DriftingSEA(seed=83).take(200)):
        producer.send(topic, orjson.dumps(e), partition=i % 2)
        producer.flush(10)
    producer.close()
    d = start_daemon()
    wait_for(lambda: d.source.assigned() == 2, 60, what="both partitions assigned")
    time.sleep(3)  # a few polls: the positions are placed at the end of the log
    assert d.pipeline.learner.events_learned == 0
    produce(bootstrap, topic, list(DriftingSEA(seed=84).take(300)), partitions=2)
    wait_for(learned(d, 300), 30, what="the new records learned")
    time.sleep(1)
    assert d.pipeline.learner.events_learned == 300
    assert d.source.out_of_range_resets == 0
