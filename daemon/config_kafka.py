"""The ``kafka`` section: where events come from, where rejected records go, and how learnd's
Kafka clients behave; and ``Secret``, the type of every token and password in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from learnd.daemon.config_labels import distinct_topics
from learnd.daemon.config_learning import Section


def _not_blank(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError("an empty or blank secret is refused; give a real one, or leave it unset")
    return value


# A token or password: never empty or blank, wherever it comes from (an empty token would mean
# no authentication at all), and redacted whenever the config is shown.
Secret = Annotated[SecretStr, AfterValidator(_not_blank)]


class KafkaConfig(Section):
    """Where events come from and rejected records go. ``heartbeat_interval_ms`` must be below
    ``session_timeout_ms``, ``dead_letter_topic`` must differ from ``topic``, and a ``SASL_*``
    ``security_protocol`` needs ``sasl_mechanism``, ``sasl_username`` and ``sasl_password``."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated brokers."""
    topic: str = "learnd.events"
    """The topic of labelled events."""
    dead_letter_topic: str = "learnd.dead-letter"
    """Where rejected records go, with their original bytes and the reason in headers."""
    labels_topic: str = "learnd.labels"
    """``labels.mode = "join"``: labels ``{"id", "label", "ts"}``, joined by id (docs/labels.md)."""
    predictions_topic: str = "learnd.predictions"
    """``labels.mode = "join"``: where served predictions with an ``id`` are logged, to be joined."""
    dead_letter_max_bytes: int = Field(1_000_000, ge=1024, le=100 * 1024 * 1024)
    """A dead letter keeps at most this many bytes of the record's key and value together; the
    rest is cut, and headers say so. Under Kafka's default 1 MiB message limit, so that no
    record, however large, can stop the checkpoints."""
    models_topic: str | None = None
    """A compacted topic the learner writes every snapshot it serves to (and rollback pins),
    for serving replicas (``learnd serve``) to follow; none: off. Records: docs/scaling.md."""
    models_chunk_bytes: int = Field(900_000, ge=1024, le=100 * 1024 * 1024)
    """A snapshot larger than this is cut into chunks of this many bytes, one record each:
    under the broker's message limit (Kafka's default ``message.max.bytes`` is 1 MiB)."""
    group_id: str = "learnd"
    """Consumer group; its offsets are committed after each checkpoint, for lag monitoring."""
    client_id: str = "learnd"
    """Client id on the broker."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a partition with no checkpoint and no committed offset starts. ``earliest`` on
    purpose: a fresh deployment learns from everything already in the topic."""
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    """The consumer. ``confluent`` (librdkafka, ``pip install 'learnd[confluent]'``) parses
    records in C; kafka-python parses them in Python, which caps ingest well below what a broker
    delivers."""
    consumer_process: bool = True
    """Run the Kafka client and event decoding in a process of their own, which hands decoded
    batches to the learning thread over a pipe, so that consuming overlaps learning on another
    core (1.4x end to end on 2 cores, docs/benchmarks.md). ``false``: all in the learning thread
    (suits one core)."""
    max_poll_records: int = Field(2000, ge=1, le=100_000)
    """Records per poll."""
    poll_timeout_ms: int = Field(100, ge=1, le=10_000)
    """How long a poll waits when there is nothing to read."""
    fetch_max_wait_ms: int = Field(100, ge=1, le=10_000)
    """The longest the broker may hold a fetch that finds nothing new (Kafka's
    ``fetch.max.wait.ms``; the clients' own default is 500). A broker that holds each fetch to
    this limit even as records arrive (tansu does) delays events by up to as much before they
    are learned; one that answers as records arrive (Apache Kafka) is not slowed by it. An idle
    consumer fetches 1000 / this many times a second (docs/design.md, "Ingest")."""
    session_timeout_ms: int = Field(10_000, ge=1000)
    """Consumer group session timeout."""
    heartbeat_interval_ms: int = Field(3000, ge=100)
    """Consumer group heartbeat interval (below ``session_timeout_ms``)."""
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    """Consumer group max poll interval."""
    reconnect_backoff_max_ms: int = Field(2000, ge=50, le=120_000)
    """Cap of the exponential reconnect backoff: bounds the resume delay after a broker outage
    (kafka-python's own default, 30 s, delays it by as much). Retries never spin."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How to talk to the brokers."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism (required with ``SASL_*``)."""
    sasl_username: str | None = None
    """SASL user name (required with ``SASL_*``)."""
    sasl_password: Secret | None = None
    """SASL password (required with ``SASL_*``; secret: never empty or blank, redacted, never
    logged)."""
    ssl_cafile: Path | None = None
    """CA bundle that signs the brokers' certificates (``SSL``, ``SASL_SSL``)."""
    ssl_certfile: Path | None = None
    """Client certificate, for brokers that ask for one."""
    ssl_keyfile: Path | None = None
    """The client certificate's private key."""

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                "kafka.heartbeat_interval_ms must be lower than kafka.session_timeout_ms "
                f"(got {self.heartbeat_interval_ms} >= {self.session_timeout_ms})"
            )
        if self.dead_letter_topic == self.topic:
            raise ValueError("kafka.dead_letter_topic must differ from kafka.topic")
        distinct_topics(
            self.topic, self.dead_letter_topic, self.labels_topic, self.predictions_topic
        )
        if self.models_topic in (self.topic, self.dead_letter_topic):
            raise ValueError(
                "kafka.models_topic must differ from kafka.topic and dead_letter_topic"
            )
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                "kafka.security_protocol SASL_* needs kafka.sasl_mechanism "
                "('PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'), kafka.sasl_username and "
                "kafka.sasl_password"
            )
        return self
