"""The Kafka event source: a consumer-group member with auto-commit off.

Positions come from learnd itself: when a partition is assigned, the consumer is sought to the
next offset learnd holds for it (from the checkpoint at start, then from what it has consumed),
so a rebalance never re-delivers what the model has already seen. Only a partition learnd has
never held starts from the group's committed offset or, failing that, ``auto_offset_reset``.
Committed offsets are written after checkpoints for lag monitoring only.

kafka-python (3.x) runs rebalance callbacks on its network thread, where blocking calls such as a
synchronous commit are refused; the callbacks here only seek and log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from adapters.kafka_common import client_options
from daemon.config import KafkaConfig
from daemon.ports import Record

log = logging.getLogger("learnd.kafka")


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaEventSource):
        self.source = source

    def on_partitions_revoked(self, revoked):
        self.source._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.source._on_assigned(assigned)


class KafkaEventSource:
    def __init__(self, cfg: KafkaConfig):
        self.cfg = cfg
        self._position: dict[int, int] = {}
        self._lag: dict[int, int] = {}
        self._started: set[int] = set()
        self.consumer = KafkaConsumer(
            **client_options(cfg),
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            max_poll_records=cfg.max_poll_records,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
        )
        self.consumer.subscribe([cfg.topic], listener=_Listener(self))

    def _on_revoked(self, revoked) -> None:
        if revoked:
            log.info(
                "partitions revoked: %s",
                sorted(tp.partition for tp in revoked),
                extra={"event": "rebalance"},
            )

    def _on_assigned(self, assigned) -> None:
        for tp in assigned:
            if tp.partition in self._position:
                self.consumer.seek(tp, self._position[tp.partition])
                origin = f"learnd's own offset {self._position[tp.partition]}"
            else:
                origin = f"committed offset or auto_offset_reset={self.cfg.auto_offset_reset}"
            log.info(
                "partition %d assigned; starting from %s",
                tp.partition,
                origin,
                extra={"event": "rebalance"},
            )

    def poll(self, timeout_s: float) -> Sequence[Record]:
        batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        out: list[Record] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            recs = batches[tp]
            out += [
                Record(r.topic, r.partition, r.offset, r.value, r.key, r.timestamp) for r in recs
            ]
            if recs:
                if tp.partition not in self._started:
                    self._started.add(tp.partition)
                    log.info(
                        "first record of partition %d at offset %d",
                        tp.partition,
                        recs[0].offset,
                        extra={
                            "event": "first_record",
                            "partition": tp.partition,
                            "offset": recs[0].offset,
                        },
                    )
                self._position[tp.partition] = recs[-1].offset + 1
        self._update_lag()
        return out

    def _update_lag(self) -> None:
        # highwater() is the high watermark from the last fetch response: no broker round trip.
        # Lag is clamped at 0: tansu was seen reporting end offsets *below* the records actually
        # readable (196,712 for 200,000), which would make lag negative.
        lag = {}
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            pos = self._position.get(tp.partition)
            if hw is not None and pos is not None:
                lag[tp.partition] = max(0, hw - pos)
        self._lag = lag

    def seek(self, positions: Mapping[int, int]) -> None:
        self._position.update(positions)
        for tp in self.consumer.assignment():
            if tp.partition in positions:
                self.consumer.seek(tp, positions[tp.partition])

    def commit(self, positions: Mapping[int, int]) -> None:
        owned = {tp.partition for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(self.cfg.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in positions.items()
            if p in owned
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # Monitoring only: the checkpoint, not the group offset, is the source of truth.
            log.warning(
                "offset commit failed (positions stay in the checkpoint): %s",
                e,
                extra={"event": "commit_failed"},
            )

    def lag(self) -> Mapping[int, int]:
        return dict(self._lag)

    def connected(self) -> bool:
        metrics = self.consumer.metrics().get("consumer-metrics", {})
        return metrics.get("connection-count", 0) > 0

    def close(self) -> None:
        self.consumer.close(autocommit=False)
