"""RELIABILITY test 7: the broker is unreachable for 10 s, then comes back.

The outage is a TCP proxy (which tansu advertises) that resets every connection and refuses new
ones. The daemon must survive, answer every prediction meanwhile, report itself not ready,
resume consuming within 15 s of the return, and apply every id exactly once.
"""

from __future__ import annotations

import resource
import threading
import time

import orjson
import pytest
from kafka import KafkaProducer

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config
from tests.support.proxy import OutageProxy

from .conftest import wait_for

pytestmark = pytest.mark.integration


def produce(bootstrap, topic, events, start):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i, e in enumerate(events, start):
        p.send(topic, e if isinstance(e, bytes) else orjson.dumps(e), partition=i % 2)
    p.flush(30)
    p.close()


def test_broker_outage_is_survived_without_loss_or_failed_predictions(tmp_path, kafka_client):
    proxy_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port).start()
    proxy = OutageProxy(proxy_port, broker.port).start()
    events = list(DriftingSEA(seed=61).take(4000))
    cfg = sea_config(
        tmp_path,
        kafka={
            "client": kafka_client,
            "bootstrap_servers": broker.bootstrap,
            "topic": "outage",
            "dead_letter_topic": "outage-dlq",
            "group_id": "outage",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "max_poll_interval_ms": 10000,
        },
        checkpoint={"audit_ids": True, "every_s": 1},
    )
    daemon = None
    stop = threading.Event()
    answers, failures = [], []
    try:
        ensure_topics(cfg.kafka, partitions=2)
        produce(broker.bootstrap, "outage", events[:2000], 0)
        daemon = Daemon(cfg)
        daemon.start()
        daemon.run_in_thread()
        wait_for(lambda: daemon.pipeline.learner.events_learned >= 2000, 60, what="first half")

        def ask():
            with LearndClient.tcp(*daemon.server.tcp_address) as c:
                while not stop.is_set():
                    ans = c.request({"op": "predict", "features": [5, 5, 5]}, check=False)
                    (answers if ans.get("ok") else failures).append(ans)
                    time.sleep(0.01)

        client = threading.Thread(target=ask)
        client.start()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        proxy.cut()
        wait_for(lambda: not daemon.service.health.broker_connected, 10, what="outage noticed")
        health = daemon.service.health.as_dict()
        assert health["ready"] is False and health["status"] == "degraded"
        assert "broker unreachable" in health["problems"]
        time.sleep(10 - 0.1)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        proxy.restore()
        back = time.monotonic()
        produce(broker.bootstrap, "outage", events[2000:], 2000)
        wait_for(lambda: daemon.pipeline.learner.events_learned >= 4000, 30, what="second half")
        resumed_after = time.monotonic() - back
        stop.set()
        client.join(10)
    finally:
        stop.set()
        if daemon is not None:
            daemon.stop()
            daemon.join(30)
        proxy.stop()
        broker.stop()

    assert failures == [] and len(answers) > 300
    assert resumed_after <= 15, (
        f"consumption resumed {resumed_after:.1f}s after the broker returned"
    )
    busy = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    assert busy < 5.0, f"{busy:.1f} CPU-seconds during a 10 s outage: retrying must not spin"
    state = LocalCheckpointStore(tmp_path / "ckpt").load_latest()
    assert state["positions"] == {0: 2000, 1: 2000}
    assert (state["audit"].numpy()[:4000] == 1).all()


def test_starting_while_the_broker_is_down_serves_and_then_consumes(tmp_path, kafka_client):
    proxy_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port).start()
    proxy = OutageProxy(proxy_port, broker.port).start()
    cfg = sea_config(
        tmp_path,
        kafka={
            "client": kafka_client,
            "bootstrap_servers": broker.bootstrap,
            "topic": "late",
            "dead_letter_topic": "late-dlq",
            "group_id": "late",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "max_poll_interval_ms": 10000,
        },
    )
    daemon = None
    try:
        ensure_topics(cfg.kafka, partitions=2)
        produce(broker.bootstrap, "late", [*DriftingSEA(seed=62).take(500), b"junk"], 0)
        proxy.cut()  # the broker is unreachable before learnd starts
        daemon = Daemon(cfg)
        daemon.start()
        daemon.run_in_thread()
        with LearndClient.tcp(*daemon.server.tcp_address) as c:
            assert c.predict([1, 2, 3])["ok"], "the (initial) model is served without a broker"
            health = c.health()
        assert health["ready"] is False and "broker unreachable" in health["problems"]
        time.sleep(2)
        proxy.restore()
        wait_for(lambda: daemon.pipeline.learner.events_learned >= 500, 60, what="consumed")
        wait_for(lambda: daemon.service.health.as_dict()["ready"], 10, what="ready")
        daemon.service.checkpoint()
        assert dict(daemon.pipeline.rejected) == {"not_json": 1}
        assert daemon.dead_letters.flush() is None  # the queued dead letter went out
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.join(30)
        proxy.stop()
        broker.stop()
