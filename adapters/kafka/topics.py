"""Creating learnd's topics (used by the demo, the tests and `learnd topics create`)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from learnd.adapters.kafka.common import client_options
from learnd.daemon.config import KafkaConfig


def ensure_topics(cfg: KafkaConfig, partitions: int = 1, replication: int = 1) -> None:
    admin = KafkaAdminClient(**client_options(cfg))
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, partitions, replication)
            for name in (cfg.topic, cfg.dead_letter_topic)
            if name not in existing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: that is what we wanted
    finally:
        admin.close()
