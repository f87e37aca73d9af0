"""Creating learnd's topics (used by the demo, the tests and `learnd topics create`)."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from learnd.adapters.kafka.common import client_options
from learnd.daemon.config import KafkaConfig
from learnd.daemon.errors import StartupError


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


def _admin(cfg: KafkaConfig, timeout_ms: int) -> KafkaAdminClient:
    return KafkaAdminClient(
        **client_options(cfg), bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms
    )


def topic_partitions(cfg: KafkaConfig, timeout_ms: int = 3000) -> dict[str, int] | None:
    """Partitions of the events and dead-letter topics, 0 for one that does not exist (asked
    without creating it); None when no broker answers within ``timeout_ms``. The client's own
    connection errors are not logged: the daemon reports an unreachable broker itself."""
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        admin = _admin(cfg, timeout_ms)
    except KafkaError:  # unreachable, or refused the client
        return None
    finally:
        kafka_log.setLevel(level)
    try:
        return _partitions(admin, (cfg.topic, cfg.dead_letter_topic))
    except KafkaError:
        return None
    finally:
        admin.close()


def _partitions(admin: KafkaAdminClient, names: tuple[str, ...]) -> dict[str, int]:
    existing = set(admin.list_topics())
    found = dict.fromkeys(names, 0)
    present = [n for n in names if n in existing]
    if present:
        for t in admin.describe_topics(present):
            found[t["name"]] = len(t["partitions"])
    return found


def create_topics(
    cfg: KafkaConfig,
    partitions: int,
    replication: int = 1,
    dead_letter_partitions: int = 1,
    timeout_ms: int = 10_000,
) -> list[str]:
    """Create the events topic (``partitions``) and the dead-letter topic where missing; one line
    per topic saying what was done. Raises ``StartupError`` with the broker's reason."""
    try:
        admin = _admin(cfg, timeout_ms)
    except KafkaError as e:
        raise StartupError(f"kafka.bootstrap_servers {cfg.bootstrap_servers}: {e}") from None
    try:
        existing = _partitions(admin, (cfg.topic, cfg.dead_letter_topic))
        lines = []
        for name, n in ((cfg.topic, partitions), (cfg.dead_letter_topic, dead_letter_partitions)):
            if existing[name]:
                lines.append(f"{name}: exists ({_count(existing[name])})")
                continue
            try:
                admin.create_topics([NewTopic(name, n, replication)])
                lines.append(f"{name}: created ({_count(n)}, replication {replication})")
            except TopicAlreadyExistsError:
                lines.append(f"{name}: exists (created meanwhile)")
        return lines
    except KafkaError as e:
        raise StartupError(f"creating topics on {cfg.bootstrap_servers}: {e}") from None
    finally:
        admin.close()


def _count(n: int) -> str:
    return f"{n} partition" + ("" if n == 1 else "s")


def missing_topics_error(cfg: KafkaConfig, found: dict[str, int]) -> StartupError | None:
    """The start-up error for topics that do not exist (a broker that does not auto-create them
    would leave the daemon waiting with nothing assigned), or None."""
    missing = [n for n in (cfg.topic, cfg.dead_letter_topic) if not found.get(n)]
    if not missing:
        return None
    keys = {cfg.topic: "kafka.topic", cfg.dead_letter_topic: "kafka.dead_letter_topic"}
    what = " and ".join(f"{keys[n]} {n!r}" for n in missing)
    return StartupError(
        f"{what} {'does' if len(missing) == 1 else 'do'} not exist on {cfg.bootstrap_servers}: "
        "create with `learnd topics create --partitions N` (same config), or start with "
        "`learnd run --create-topics`"
    )
