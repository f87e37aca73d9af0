"""Which event source a configuration asks for: the Kafka client, in this process or in a
consumer process of its own (``kafka.consumer_process``); with ``labels.mode = "join"``, wrapped
with consumers of the label topic and the prediction log (``join_source``)."""

from __future__ import annotations

from learnd.adapters.kafka.clients import client_source_class
from learnd.daemon.config import LearndConfig
from learnd.daemon.labels.stage import JoinStage


def open_source(cfg: LearndConfig, join: JoinStage | None = None):
    """The daemon's event source (nothing connects until its first poll)."""
    cls = client_source_class(cfg.kafka)
    if cfg.kafka.consumer_process:
        from learnd.adapters.kafka.consumer_process import ConsumerProcess

        events = ConsumerProcess(cfg)
    else:
        events = cls(cfg.kafka)
    if join is None:
        return events
    from learnd.adapters.kafka.join_source import JoinSource

    k = cfg.kafka
    topics = (k.labels_topic, k.predictions_topic)
    # Every partition of each, assigned by learnd, not by a group: one daemon reads them whole
    # (docs/labels.md), and no group join can stall them. A group id and a client id of their
    # own each name their committed offsets and their connections.
    sides = {
        t: cls(
            k.model_copy(
                update={
                    "topic": t,
                    "group_id": f"{k.group_id}.{suffix}",
                    "client_id": f"{k.client_id}-{suffix}",
                }
            ),
            assign_all=True,
        )
        for t, suffix in zip(topics, ("labels", "predictions"), strict=True)
    }
    return JoinSource(events, sides, join, per_poll=k.max_poll_records)
