"""The Kafka event source on confluent-kafka (librdkafka), for ``kafka.client: confluent``.

Optional (``pip install 'learnd[confluent]'``): kafka-python stays the default. It pays off when
the broker delivers faster than kafka-python can parse: kafka-python reads each record in pure
Python, which caps one consumer at roughly 100-200k records/s on this class of machine, where
librdkafka's C parser gives ~800k (bench/e2e.py prints both).

The contract is :class:`learnd.adapters.kafka.source.KafkaEventSource`'s: positions come from learnd
(partitions learnd holds resume at its own next offset; others at the group's committed offset,
else ``auto_offset_reset``), offsets are committed only for monitoring and on hand-over, an
out-of-range position is counted and logged, never skipped silently. librdkafka runs rebalance
callbacks inside ``consume()`` on the learning thread, so the hand-over checkpoint and its
synchronous commit run right there, while the learner is waiting in that call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from learnd.adapters.kafka.source_state import SourceState
from learnd.daemon.config import KafkaConfig
from learnd.daemon.events.record import RawRecord, Record

log = logging.getLogger("learnd.kafka")


def consumer_config(cfg: KafkaConfig) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "client.id": cfg.client_id,
        "group.id": cfg.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # Out of range raises instead of jumping: learnd counts the gap and repositions itself.
        "auto.offset.reset": "error",
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "reconnect.backoff.max.ms": cfg.reconnect_backoff_max_ms,
        "security.protocol": cfg.security_protocol,
        "statistics.interval.ms": 1000,  # broker states, for connected()
        "fetch.wait.max.ms": cfg.fetch_max_wait_ms,
        "max.partition.fetch.bytes": 10 * 2**20,
        "fetch.max.bytes": 50 * 2**20,
    }
    if cfg.sasl_mechanism is not None:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
        conf["sasl.username"] = cfg.sasl_username
        conf["sasl.password"] = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
    for ours, theirs in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        value = getattr(cfg, ours)
        if value is not None:
            conf[theirs] = str(value)
    return conf


class ConfluentEventSource(SourceState):
    def __init__(self, cfg: KafkaConfig, assign_all: bool = False):
        super().__init__(cfg, assign_all)
        self._brokers_up: bool | None = None
        # Kept here, not asked of the consumer: other threads (health, tests) read it, and a
        # consumer call from another thread can wait ~30 s behind the learning thread's
        # consume().
        self._assigned: frozenset[int] = frozenset()
        self.consumer: Consumer | None = None

    def _connect(self) -> Consumer:
        # librdkafka connects (and reconnects) in the background: creating it never fails for
        # a broker that is down, so a down broker cannot stop learnd serving its checkpoint.
        if self.consumer is None:
            conf = consumer_config(self.cfg)
            conf["error_cb"] = self._on_error
            conf["stats_cb"] = self._on_stats
            conf["on_commit"] = self._on_commit
            self.consumer = Consumer(conf)
            if not self.assign_all:
                self.consumer.subscribe(
                    [self.cfg.topic],
                    on_assign=self._on_assign,
                    on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
        if self._partitions_due():
            self._assign_every_partition(self.consumer)
        return self.consumer

    def _assign_every_partition(self, consumer: Consumer) -> None:
        """Assign the topic's partitions (``assign_all``), placed as a group's would be."""
        try:
            topic = consumer.list_topics(self.cfg.topic, timeout=1.0).topics.get(self.cfg.topic)
        except KafkaException:
            topic = None  # broker away: looked up again shortly
        found = set(topic.partitions) if topic is not None and topic.error is None else set()
        self._partitions_looked_up(bool(found))
        if not found or found <= self._assigned:
            return
        partitions = [TopicPartition(self.cfg.topic, p) for p in sorted(found | self._assigned)]
        self._on_assign(consumer, partitions)  # the held ones resume at learnd's own positions

    # ---------------------------------------------------------------- callbacks (in consume)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_up = False
        log.warning("kafka client: %s", err.str(), extra={"event": "broker_down"})

    def _on_stats(self, stats_json: str) -> None:
        brokers = orjson.loads(stats_json).get("brokers", {})
        self._brokers_up = any(
            b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values()
        )

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The result of a monitoring commit (asynchronous: see :meth:`commit`)."""
        failed = err if err is not None else next((tp.error for tp in partitions if tp.error), None)
        if failed is not None:
            self._note_commit_failed(KafkaException(failed))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        unknown = [tp for tp in partitions if tp.partition not in self._position]
        committed: dict[int, int] = {}
        lookup_failed = False
        if unknown:
            try:
                for tp in consumer.committed(unknown, timeout=self.cfg.session_timeout_ms / 1000):
                    if tp.offset >= 0:
                        committed[tp.partition] = tp.offset
            except KafkaException as e:
                # librdkafka looks the committed offsets up itself (OFFSET_INVALID below); one
                # that has none raises the out-of-range error, and poll() places it from there.
                lookup_failed = True
                log.warning(
                    "could not read the group's committed offsets (%s); the client looks "
                    "them up itself",
                    e,
                    extra={"event": "rebalance"},
                )
        for tp in partitions:
            if tp.partition in self._position:
                tp.offset = self._position[tp.partition]
                origin = f"learnd's own offset {tp.offset}"
            elif tp.partition in committed:
                tp.offset = committed[tp.partition]
                self._position[tp.partition] = tp.offset
                origin = f"the group's committed offset {tp.offset}"
            elif lookup_failed:
                tp.offset = OFFSET_INVALID
                origin = "the group's committed offset, as the client finds it"
            else:
                # a logical offset: no broker round trip, nothing to fail here
                tp.offset = OFFSET_BEGINNING if self._earliest else OFFSET_END
                origin = f"auto_offset_reset={self.cfg.auto_offset_reset}"
            self._note_assigned(tp.partition, origin)
        consumer.assign(partitions)
        self._assigned = frozenset(tp.partition for tp in partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self._note_revoked([tp.partition for tp in partitions])
        self._hand_over(consumer, partitions)
        consumer.unassign()
        self._assigned = frozenset()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # membership lost: others may already own them, so no commit
        self._assigned = frozenset()
        self._note_revoked([tp.partition for tp in partitions], "lost")

    def _hand_over(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Checkpoint and commit before the revoked partitions go to another member."""
        positions = self._hand_over_positions({tp.partition for tp in partitions})
        if positions is None:
            return
        offsets = [TopicPartition(self.cfg.topic, p, o) for p, o in positions.items()]
        try:
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            self._note_handover_refused(e)
            return
        self._note_handed_over(positions)

    # ---------------------------------------------------------------- positions

    @property
    def _earliest(self) -> bool:
        return self.cfg.auto_offset_reset == "earliest"

    def _reposition(self, partition: int) -> None:
        """Count an out-of-range position and move per auto_offset_reset; never silently."""
        assert self.consumer is not None
        position = self._position.get(partition, 0)
        try:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(self.cfg.topic, partition), timeout=10
            )
        except KafkaException as e:
            # Still counted and logged; the gap is unknown, and the logical offset needs no
            # broker answer.
            self.out_of_range_resets += 1
            self._position.pop(partition, None)
            self._ahead_since.pop(partition, None)
            logical = OFFSET_BEGINNING if self._earliest else OFFSET_END
            self.consumer.seek(TopicPartition(self.cfg.topic, partition, logical))
            log.error(
                "partition %d: offset %d is out of range; moved to the %s offset "
                "(watermarks unavailable: %s), records skipped unknown",
                partition,
                position,
                self.cfg.auto_offset_reset,
                e,
                extra={"event": "offset_out_of_range", "partition": partition},
            )
            return
        target = low if self._earliest else high
        self.consumer.seek(TopicPartition(self.cfg.topic, partition, target))
        self._note_out_of_range(partition, position, target)

    def poll(self, timeout_s: float) -> Sequence[RawRecord]:
        consumer = self._connect()
        self._in_poll = True
        try:
            msgs = consumer.consume(self.cfg.max_poll_records, timeout_s)
        finally:
            self._in_poll = False
        out: list[RawRecord] = []
        got: set[int] = set()
        topic = self.cfg.topic
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._AUTO_OFFSET_RESET and m.partition() is not None:
                    self._reposition(m.partition())
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka consume error: %s", err.str(), extra={"event": "consume"})
                continue
            p, offset = m.partition(), m.offset()
            out.append(Record(topic, p, offset, m.value(), m.key()))
            self._position[p] = offset + 1  # log order per partition: the last one wins
            if p not in got:
                got.add(p)
                self._note_first_record(p, offset)
        if out:
            self._brokers_up = True
        self._update_lag(got)
        return out

    def _update_lag(self, got: set[int]) -> None:
        """Lag from the high watermarks of the last fetches (no broker round trip); a position
        beyond the high watermark with nothing coming back is out of range (tansu answers such
        fetches with nothing instead of an error)."""
        assert self.consumer is not None
        lag = {}
        for p in self._assigned:
            _, hw = self.consumer.get_watermark_offsets(
                TopicPartition(self.cfg.topic, p), cached=True
            )
            pos = self._position.get(p)
            if hw < 0 or pos is None:
                continue
            lag[p] = max(0, hw - pos)
            if self._stalled_ahead(p, hw, p in got):
                self._reposition(p)
        self._lag = lag

    def seek(self, positions: Mapping[int, int]) -> None:
        self._position.update(positions)
        if self.consumer is None:
            return
        for p in self._assigned:
            if p in positions:
                self.consumer.seek(TopicPartition(self.cfg.topic, p, positions[p]))

    def commit(self, positions: Mapping[int, int]) -> None:
        if self.consumer is None:
            return
        owned = self._assigned
        offsets = [
            TopicPartition(self.cfg.topic, p, o)
            for p, o in positions.items()
            if p in owned and o != OFFSET_INVALID
        ]
        if not offsets:
            return
        # Asynchronous: these commits are for monitoring (positions come from the checkpoint),
        # and a synchronous one blocks the learning thread while the coordinator is away
        # (~6 s per commit during an outage, seen on tansu). The result arrives in
        # _on_commit during a later consume(); close() completes the last one. The hand-over
        # commit stays synchronous.
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as e:
            self._note_commit_failed(e)

    def assigned(self) -> int:
        return len(self._assigned)

    def connected(self) -> bool:
        return bool(self._brokers_up)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
