"""A serving replica (`learnd serve`) through a broker outage, with typed features.

The replica follows the learner's kafka.models_topic. While the broker is unreachable it keeps
answering with the snapshot it has (0 failed requests, versions never going backwards on a
connection) and says it is degraded; the learner goes on learning and publishing meanwhile. When
the broker is back, the replica serves the learner's newest version. The snapshots carry typed
features (a number, a boolean and a learned category vocabulary): the replica answers string
and boolean features, a category it never saw included, exactly as the learner serves them.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.fakes import ListDeadLetters, ListSource, MemoryCheckpointStore
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.serving.replica import Replica
from learnd.daemon.config import LearndConfig
from tests.support.proxy import OutageProxy

from .conftest import wait_for

pytestmark = pytest.mark.integration

FEATURES = {"amount": "number", "is_new": "boolean", "country": "category"}
ASKED = [
    {"amount": 0.5, "is_new": True, "country": "FR"},
    {"amount": -1.0, "is_new": False, "country": "never-seen"},
]


def events(n: int, seed: int, flip: bool = False):
    rng = np.random.default_rng(seed)
    for i in range(n):
        country = ["DE", "FR", "US"][int(rng.integers(3))]
        amount = float(rng.normal())
        label = int(amount > 0 or country == "FR")
        yield {
            "features": {"amount": amount, "is_new": bool(i % 2), "country": country},
            "label": 1 - label if flip else label,
        }


def config(tmp_path, name: str, bootstrap: str) -> LearndConfig:
    return LearndConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "models_topic": "ro-models",
                "models_chunk_bytes": 4096,  # several chunks per snapshot
            },
            "schema": {"task": "binary", "features": FEATURES},
            "model": {"hidden": [16]},
            "learning": {"publish_every_s": 0.1, "gate": {"window": 300}},
            "checkpoint": {"dir": str(tmp_path / name)},
            "serving": {"tcp_port": 0, "processes": 0},
            "metrics": {"enabled": False},
        }
    )


def ask(address, req: dict) -> dict:
    with LearndClient.tcp(*address) as c:
        return c.request(req, check=False)


def test_a_replica_serves_through_a_broker_outage_and_catches_up(tmp_path):
    proxy_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port).start()
    proxy = OutageProxy(proxy_port, broker.port).start()
    src = ListSource(batch=200)
    src.append(list(events(3000, seed=1)))
    learner = Daemon(
        config(tmp_path, "learner", broker.bootstrap),
        source=src,
        dead_letters=ListDeadLetters(),
        store=MemoryCheckpointStore(),
    )
    replica = Replica(config(tmp_path, "replica", broker.bootstrap))
    stop = threading.Event()
    versions: list[int] = []
    failed: list[dict] = []

    def keep_asking():
        with LearndClient.tcp(*replica.server.tcp_address) as c:
            while not stop.is_set():
                answer = c.request({"op": "predict", "features": ASKED[0]}, check=False)
                (versions.append(answer["version"]) if answer.get("ok") else failed.append(answer))
                time.sleep(0.005)

    asker = threading.Thread(target=keep_asking)
    served = learner.pipeline.ref
    try:
        learner.start()
        learner.run_in_thread()
        replica.start()
        threading.Thread(target=replica.run, daemon=True).start()
        wait_for(lambda: learner.pipeline.learner.events_learned >= 3000, 60, what="learned")
        wait_for(
            lambda: (
                replica.ref.current is not None
                and replica.ref.current.version == served.current.version
            ),
            60,
            what="the replica at the learner's version",
        )
        # typed features through the topic: the replica answers as the learner does
        for features in ASKED:
            mine = ask(learner.server.tcp_address, {"op": "predict", "features": features})
            theirs = ask(replica.server.tcp_address, {"op": "predict", "features": features})
            assert theirs["ok"] and theirs["version"] == mine["version"]
            assert theirs["scores"] == pytest.approx(mine["scores"], abs=1e-6)
        before = replica.ref.current.version
        asker.start()

        proxy.cut()
        wait_for(lambda: replica.health()["status"] == "degraded", 20, what="outage noticed")
        assert "broker unreachable" in replica.health()["problems"]
        src.append(list(events(3000, seed=2, flip=True)))  # learned and published meanwhile
        wait_for(lambda: learner.pipeline.learner.events_learned >= 6000, 60, what="learned")
        wait_for(lambda: served.current.version > before, 30, what="a new learner version")
        time.sleep(2.0)  # the replica keeps answering on what it has
        assert replica.ref.current.version == before
        during = len(versions)

        proxy.restore()
        wait_for(
            lambda: replica.ref.current.version == served.current.version,
            60,
            what="the replica at the learner's newest version after the outage",
        )
        wait_for(lambda: replica.health()["status"] == "ready", 20, what="ready again")
        time.sleep(0.5)
    finally:
        stop.set()
        if asker.is_alive():
            asker.join(10)
        replica.stop()
        learner.stop()
        learner.join(30)
        proxy.stop()
        broker.stop()
    assert failed == []
    assert during > 100 and len(versions) > during
    assert versions == sorted(versions), "a version went backwards on the connection"
    assert versions[-1] > before
