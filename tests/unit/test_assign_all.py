"""A source that reads its topic whole (``assign_all``) takes partitions added to the topic later,
and keeps its own positions for those it holds. Tansu cannot add partitions to a topic, so the
lookup runs here against a stand-in for kafka-python's consumer."""

from __future__ import annotations

from kafka import TopicPartition

from learnd.adapters.kafka import source_state
from learnd.adapters.kafka.source import KafkaEventSource
from learnd.daemon.config import KafkaConfig


class _Consumer:
    def __init__(self):
        self.partitions: set[int] = set()
        self.held: set[TopicPartition] = set()
        self.seeks: list[tuple[int, int]] = []

    def partitions_for_topic(self, topic):
        return set(self.partitions)

    def assignment(self):
        return set(self.held)

    def assign(self, tps):
        self.held = set(tps)

    def seek(self, tp, offset):
        self.seeks.append((tp.partition, offset))


def test_partitions_added_later_are_taken_and_held_ones_resume_at_learnds_position(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(source_state.time, "monotonic", lambda: clock[0])
    source = KafkaEventSource(KafkaConfig(topic="labels"), assign_all=True)
    source.consumer = consumer = _Consumer()

    assert source._partitions_due()
    source._assign_every_partition()  # the topic does not exist yet
    assert consumer.held == set() and not source._partitions_due()
    clock[0] += source_state.MISSING_TOPIC_RETRY_S
    consumer.partitions = {0}
    assert source._partitions_due()
    source._assign_every_partition()
    assert {tp.partition for tp in consumer.held} == {0}

    source._position[0] = 42  # read up to here
    consumer.partitions = {0, 1, 2}
    clock[0] += source_state.PARTITIONS_RECHECK_S - 1
    assert not source._partitions_due()  # looked up again only every PARTITIONS_RECHECK_S
    clock[0] += 1
    consumer.seeks.clear()
    source._assign_every_partition()
    assert {tp.partition for tp in consumer.held} == {0, 1, 2}
    assert consumer.seeks == [(0, 42)]  # 1 and 2 start from the committed offset, else the reset


def test_a_group_member_never_assigns_itself():
    source = KafkaEventSource(KafkaConfig(topic="events"))
    assert not source._partitions_due()
