"""Partition rebalances: a member that takes over a partition learnd never held starts from the
group's committed offset, so nothing committed is learned twice; the revoking member checkpoints
and commits *before* the partition is handed over (kafka-python 3's async rebalance listener,
while the learning thread waits in ``poll()``), so even records it learned since its last
scheduled checkpoint are not learned again by the next owner.
"""

from __future__ import annotations

import pytest

from learnd.adapters.kafka.topics import ensure_topics
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config

from .conftest import wait_for
from .test_kafka_daemon import learned, produce

pytestmark = pytest.mark.integration


def split_with_a_second_member(
    d1, kafka_section, tmp_path, seed, check=lambda: None, consumer_process=True
):
    """Start a second member, wait until each holds one of the 2 partitions, run ``check``,
    produce 2000 more records: the second member must learn exactly its partition's new 1000
    (it starts from the offset d1 committed, not from the partition's beginning)."""
    from learnd.adapters.bootstrap import Daemon

    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    kafka = {**kafka_section, "consumer_process": consumer_process}
    d2 = Daemon(sea_config(tmp_path / "second", kafka=kafka))
    d2.start()
    d2.run_in_thread()
    try:
        wait_for(
            lambda: d1.source.assigned() == 1 and d2.source.assigned() == 1,
            60,
            what="the partitions split between the two members",
        )
        check()
        produce(bootstrap, topic, list(DriftingSEA(seed=seed).take(2000)), partitions=2)
        wait_for(learned(d2, 1000), 60, what="d2 learned its partition's new records")
        wait_for(learned(d1, 3000), 60, what="d1 learned its remaining partition's new records")
        assert d2.pipeline.learner.events_learned == 1000
        assert d1.pipeline.learner.events_learned == 3000
    finally:
        d2.stop()
        d2.join(30)


def test_second_member_takes_a_partition_after_a_checkpoint(start_daemon, kafka_section, tmp_path):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    ensure_topics(sea_config(tmp_path, kafka=kafka_section).kafka, partitions=2)
    produce(bootstrap, topic, list(DriftingSEA(seed=101).take(2000)), partitions=2)
    d1 = start_daemon(checkpoint={"every_s": 0.5})
    wait_for(learned(d1, 2000), 60, what="d1 learned both partitions")
    wait_for(lambda: d1.source.assigned() == 2, 10, what="d1 holds both partitions")
    before = d1.service.health.checkpoints
    wait_for(lambda: d1.service.health.checkpoints >= before + 2, 10, what="checkpoint + commit")
    split_with_a_second_member(d1, kafka_section, tmp_path, seed=102)


@pytest.mark.parametrize("consumer_process", [True, False], ids=["consumer-process", "in-thread"])
def test_revoked_partitions_are_checkpointed_and_committed_before_the_hand_over(
    start_daemon, kafka_section, tmp_path, consumer_process
):
    """No scheduled checkpoint ever runs here: only the hand-over can record d1's progress
    (the one checkpoint before it is written at start-up, before anything is learned, to reserve
    version numbers). With the consumer in a process of its own, the hand-over crosses the
    process boundary."""
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    ensure_topics(sea_config(tmp_path, kafka=kafka_section).kafka, partitions=2)
    produce(bootstrap, topic, list(DriftingSEA(seed=103).take(2000)), partitions=2)
    d1 = start_daemon(
        kafka={"consumer_process": consumer_process},
        checkpoint={"every_s": 3600, "every_events": 10**9},
    )
    wait_for(learned(d1, 2000), 60, what="d1 learned both partitions")
    assert d1.service.health.checkpoints == 1  # the start-up one

    def handed_over():
        assert d1.source.handovers >= 1 and d1.service.health.checkpoints >= 2

    split_with_a_second_member(
        d1, kafka_section, tmp_path, seed=104, check=handed_over, consumer_process=consumer_process
    )
