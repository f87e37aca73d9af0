"""Which Kafka client a configuration asks for (``kafka.client``): the source class that wraps it.

Both the in-process source (:mod:`learnd.adapters.kafka.sources`) and the consumer process
(:mod:`learnd.adapters.kafka.consumer_process`) pick their client here, so neither imports the
other.
"""

from __future__ import annotations

from learnd.daemon.config import KafkaConfig
from learnd.daemon.errors import StartupError


def client_source_class(cfg: KafkaConfig) -> type:
    """The source class of ``kafka.client``; a missing optional client stops start-up."""
    if cfg.client == "kafka-python":
        from learnd.adapters.kafka.source import KafkaEventSource

        return KafkaEventSource
    try:
        from learnd.adapters.kafka.confluent_source import ConfluentEventSource
    except ImportError as e:
        raise StartupError(
            f"kafka.client is 'confluent' but confluent-kafka cannot be imported ({e}); install "
            "it with: pip install 'learnd[confluent]', or set kafka.client; valid values: "
            "'kafka-python', 'confluent'"
        ) from e
    return ConfluentEventSource
