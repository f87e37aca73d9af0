"""The dead-letter sink: rejected records go to a Kafka topic with their original bytes.

The value and key are the original ones; why and where from travel in headers (the convention
of Kafka Connect's dead-letter queues): ``learnd.reason``, ``learnd.detail``,
``learnd.source.topic``, ``learnd.source.partition``, ``learnd.source.offset``.
"""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

from learnd.adapters.kafka.common import client_options
from learnd.daemon.config import KafkaConfig
from learnd.daemon.events.record import RawRecord


class KafkaDeadLetters:
    """Dead letters are queued in memory and sent by a producer created when first needed; if
    the brokers cannot be reached they stay queued, and :meth:`flush` (before every checkpoint)
    raises, so no offset past an undelivered dead letter is ever checkpointed."""

    def __init__(self, cfg: KafkaConfig, flush_timeout_s: float = 30.0):
        self.cfg = cfg
        self.topic = cfg.dead_letter_topic
        self.flush_timeout_s = flush_timeout_s
        self.producer: KafkaProducer | None = None
        self._queued: list[tuple[RawRecord, str, str]] = []
        self._pending: list = []

    def send(self, record: RawRecord, reason: str, detail: str) -> None:
        self._queued.append((record, reason, detail))

    def _produce(self) -> None:
        if self.producer is None:
            self.producer = KafkaProducer(
                **client_options(self.cfg), acks="all", linger_ms=5, retries=10
            )
        for record, reason, detail in self._queued:
            headers = [
                ("learnd.reason", reason.encode()),
                ("learnd.detail", detail.encode()[:1000]),
                ("learnd.source.topic", record.topic.encode()),
                ("learnd.source.partition", str(record.partition).encode()),
                ("learnd.source.offset", str(record.offset).encode()),
            ]
            self._pending.append(
                (
                    self.producer.send(
                        self.topic, value=record.value, key=record.key, headers=headers
                    ),
                    (record, reason, detail),
                )
            )
        self._queued = []

    def flush(self) -> None:
        """Send and wait for every dead letter so far; raise ConnectionError if any is not
        acknowledged (those are kept and retried at the next flush)."""
        if not self._queued and not self._pending:
            return
        try:
            self._produce()
            self.producer.flush(timeout=self.flush_timeout_s)
        except KafkaError as e:
            raise ConnectionError(f"dead-letter flush failed: {e}") from e
        failed = [item for future, item in self._pending if not future.is_done or future.failed()]
        self._pending = []
        if failed:
            self._queued = failed + self._queued
            raise ConnectionError(f"{len(failed)} dead letters not yet written to {self.topic}")

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close(timeout=self.flush_timeout_s)
