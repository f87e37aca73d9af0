"""Which event source a configuration asks for: the Kafka client, in this process or in a
consumer process of its own (``kafka.consumer_process``)."""

from __future__ import annotations

from daemon.config import KafkaConfig, LearndConfig
from daemon.errors import StartupError


def client_source_class(cfg: KafkaConfig) -> type:
    """The source class of ``kafka.client``; a missing optional client stops start-up."""
    if cfg.client == "kafka-python":
        from adapters.kafka_source import KafkaEventSource

        return KafkaEventSource
    try:
        from adapters.confluent_source import ConfluentEventSource
    except ImportError as e:
        raise StartupError(
            f"kafka.client is 'confluent' but confluent-kafka cannot be imported ({e}); install "
            "it with: pip install 'learnd[confluent]', or set kafka.client; valid values: "
            "'kafka-python', 'confluent'"
        ) from e
    return ConfluentEventSource


def open_source(cfg: LearndConfig):
    """The daemon's event source (nothing connects until its first poll)."""
    cls = client_source_class(cfg.kafka)
    if cfg.kafka.consumer_process:
        from adapters.consumer_process import ConsumerProcess

        return ConsumerProcess(cfg)
    return cls(cfg.kafka)
