"""`learnd topics create`, and the topic check `learnd run` makes before it starts consuming.

Brokers that do not create topics on first use (Kafka with ``auto.create.topics.enable=false``,
most managed services) would leave the daemon subscribed to nothing, waiting silently; brokers
that do would create the events topic with their default partition count. So `learnd run`
asks first, without creating anything, and stops with one line when a topic is missing, unless
``--create-topics`` says to create it. When no broker answers, the check is skipped: the
daemon starts and retries as it does after any outage.
"""

from __future__ import annotations

import argparse
import logging

from learnd.daemon.config import LearndConfig

log = logging.getLogger("learnd")


def add_topic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--partitions", type=int, default=1, help="partitions of the events topic (default 1)"
    )
    p.add_argument("--replication-factor", type=int, default=1, help="(default 1)")
    p.add_argument(
        "--dead-letter-partitions", type=int, default=1, help="(default 1: order is kept)"
    )


def create(cfg: LearndConfig, args: argparse.Namespace) -> list[str]:
    from learnd.adapters.kafka.topics import create_topics

    return create_topics(
        cfg.kafka, args.partitions, args.replication_factor, args.dead_letter_partitions
    )


def check_before_run(cfg: LearndConfig, args: argparse.Namespace) -> None:
    """Stop start-up (``StartupError``) when a topic is missing, or create it if asked."""
    from learnd.adapters.kafka.topics import missing_topics_error, topic_partitions

    found = topic_partitions(cfg.kafka)
    if found is None:
        return  # no broker answered: the daemon starts, says so and retries
    problem = missing_topics_error(cfg.kafka, found)
    if problem is None:
        return
    if not args.create_topics:
        raise problem
    for line in create(cfg, args):
        log.info("topic %s", line, extra={"event": "topics"})
