"""Which event source a configuration asks for: the Kafka client, in this process or in a
consumer process of its own (``kafka.consumer_process``); with ``labels.mode = "join"``, wrapped
with consumers of the label topic and the prediction log (``join_source``)."""

from __future__ import annotations

from learnd.adapters.kafka.clients import client_source_class
from learnd.daemon.config import LearndConfig
from learnd.daemon.labels.stage import JoinStage


def open_source(cfg: LearndConfig, join: JoinStage | None = None):
    """The daemon's event source (nothing connects until its first poll)."""
    if cfg.kafka.consumer_process:
        from learnd.adapters.kafka.consumer_process import ConsumerProcess

        events = ConsumerProcess(cfg)
    else:
        events = client_source_class(cfg.kafka)(cfg.kafka)
    if join is None:
        return events
    from learnd.adapters.kafka.join_source import JoinSource, side_sources

    # In a consumer process, that process reads the join's topics too (and decodes them there).
    return JoinSource(events, {} if cfg.kafka.consumer_process else side_sources(cfg), join)
