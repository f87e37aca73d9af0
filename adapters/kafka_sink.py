"""The dead-letter sink: rejected records go to a Kafka topic with their original bytes.

The value and key are the original ones; why and where from travel in headers (the convention
of Kafka Connect's dead-letter queues): ``learnd.reason``, ``learnd.detail``,
``learnd.source.topic``, ``learnd.source.partition``, ``learnd.source.offset``.
"""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.errors import KafkaError

from adapters.kafka_common import client_options
from daemon.config import KafkaConfig
from daemon.ports import Record


class KafkaDeadLetters:
    def __init__(self, cfg: KafkaConfig, flush_timeout_s: float = 30.0):
        self.topic = cfg.dead_letter_topic
        self.flush_timeout_s = flush_timeout_s
        self.producer = KafkaProducer(**client_options(cfg), acks="all", linger_ms=5, retries=10)
        self._pending: list = []

    def send(self, record: Record, reason: str, detail: str) -> None:
        headers = [
            ("learnd.reason", reason.encode()),
            ("learnd.detail", detail.encode()[:1000]),
            ("learnd.source.topic", record.topic.encode()),
            ("learnd.source.partition", str(record.partition).encode()),
            ("learnd.source.offset", str(record.offset).encode()),
        ]
        self._pending.append(
            self.producer.send(self.topic, value=record.value, key=record.key, headers=headers)
        )

    def flush(self) -> None:
        """Wait for every dead letter since the last flush; raise ConnectionError on failure."""
        try:
            self.producer.flush(timeout=self.flush_timeout_s)
        except KafkaError as e:
            raise ConnectionError(f"dead-letter flush failed: {e}") from e
        failed = [f for f in self._pending if f.failed()]
        self._pending = [f for f in self._pending if not f.is_done]
        if failed:
            raise ConnectionError(
                f"{len(failed)} dead letters were not written to {self.topic}: {failed[0].exception}"
            )
        if self._pending:
            raise ConnectionError(f"{len(self._pending)} dead letters still unacknowledged")

    def close(self) -> None:
        self.producer.close(timeout=self.flush_timeout_s)
