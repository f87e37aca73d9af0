"""Which event source a configuration asks for: the Kafka client, in this process or in a
consumer process of its own (``kafka.consumer_process``)."""

from __future__ import annotations

from learnd.adapters.kafka.clients import client_source_class
from learnd.daemon.config import LearndConfig


def open_source(cfg: LearndConfig):
    """The daemon's event source (nothing connects until its first poll)."""
    cls = client_source_class(cfg.kafka)
    if cfg.kafka.consumer_process:
        from learnd.adapters.kafka.consumer_process import ConsumerProcess

        return ConsumerProcess(cfg)
    return cls(cfg.kafka)
