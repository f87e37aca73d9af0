"""`learnd run` writing kafka.models_topic and `learnd serve` replicas following it, as processes
on the embedded broker: both replicas reach the learner's version, one started late catches up,
one SIGKILLed and restarted serves again; clients asking the replicas across the publishes get
0 failed requests and versions that never go backwards on a connection; a rollback on the
learner reaches the replicas, which refuse rollback themselves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.settings import build_config
from learnd.daemon.events.synthetic import DriftingSEA

pytestmark = pytest.mark.e2e
LEARND = shutil.which("learnd", path=str(Path(sys.executable).parent)) or "learnd"
ROW = [5.0, 4.0, 1.0]


def _env(
    broker, tmp_path, name: str, port: int, metrics_port: int | None = None, oip: int | None = None
) -> dict:
    extra = {"LEARND_SERVING__OIP_HTTP_PORT": str(oip)} if oip else {}
    return {
        **extra,
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "LEARND_KAFKA__TOPIC": "rep-events",
        "LEARND_KAFKA__DEAD_LETTER_TOPIC": "rep-dlq",
        "LEARND_KAFKA__MODELS_TOPIC": "rep-models",
        "LEARND_KAFKA__MODELS_CHUNK_BYTES": "4096",  # several chunks per snapshot
        "LEARND_KAFKA__GROUP_ID": "rep",
        "LEARND_SCHEMA__FEATURES": '["x1", "x2", "x3"]',
        "LEARND_MODEL__HIDDEN": "[32]",
        "LEARND_LEARNING__PUBLISH_EVERY_S": "0.2",
        "LEARND_CHECKPOINT__DIR": str(tmp_path / name),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_METRICS__ENABLED": "true" if metrics_port else "false",
        "LEARND_METRICS__PORT": str(metrics_port or 0),
        "LEARND_LOG__FORMAT": "json",
    }


def _ask(port: int, req: dict) -> dict | None:
    try:
        with LearndClient.tcp("127.0.0.1", port) as c:
            return c.request(req, check=False)
    except OSError:
        return None


def _wait(what, predicate, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"waited {timeout_s}s for {what}: last {value!r}")


def _oip_infer(port: int) -> dict:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": ROW}]}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/learnd/infer",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as answer:
        return orjson.loads(answer.read())


def _version(port: int) -> int | None:
    answer = _ask(port, {"op": "health"})
    return answer.get("version") if answer else None


class Asker(threading.Thread):
    """Asks one replica over one connection until stopped; keeps every answer's version."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.stop, self.versions, self.failed = port, threading.Event(), [], []

    def run(self) -> None:
        with LearndClient.tcp("127.0.0.1", self.port) as c:
            while not self.stop.is_set():
                answer = c.request({"op": "predict", "features": ROW}, check=False)
                if answer.get("ok"):
                    self.versions.append(answer["version"])
                else:
                    self.failed.append(answer)


def _produce(broker, n: int, seed: int) -> None:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    for i, event in enumerate(DriftingSEA(seed=seed).take(n)):
        producer.send("rep-events", orjson.dumps(event), partition=i % 2)
        if i % 500 == 499:
            producer.flush(30)
            time.sleep(0.1)  # a stream, not one batch: several publishes
    producer.flush(30)
    producer.close()


def _settled(port: int) -> int | None:
    """The learner's version if it stays the same for a second (the stream has been learned)."""
    before = _version(port)
    time.sleep(1.0)
    return before if before is not None and before == _version(port) else None


def _same(*ports: int) -> int | None:
    """The version all of ``ports`` serve, if they serve the same."""
    versions = {_version(p) for p in ports}
    return versions.pop() if len(versions) == 1 else None


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return err


def test_replicas_follow_the_learner_catch_up_and_survive_sigkill(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    learner_port, r1_port, r2_port = free_port(), free_port(), free_port()
    r1_metrics, r2_oip = free_port(), free_port()
    learner_env = _env(broker, tmp_path, "learner", learner_port)
    cfg = build_config(environ={k: v for k, v in learner_env.items() if k.startswith("LEARND_")})
    ensure_topics(cfg.kafka, partitions=2)
    procs: list[subprocess.Popen] = []

    def start(cmd: str, env: dict) -> subprocess.Popen:
        proc = subprocess.Popen([LEARND, cmd], env=env, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    try:
        start("run", learner_env)
        _wait("the learner's first version", lambda: _version(learner_port))
        r1 = start("serve", _env(broker, tmp_path, "r1", r1_port, r1_metrics))
        _wait("replica 1 serving", lambda: _version(r1_port))
        askers = [Asker(r1_port), Asker(r1_port)]
        for a in askers:
            a.start()
        _produce(broker, 4000, seed=1)
        # replica 2 starts late, after the publishes: it starts from the newest snapshot
        start("serve", _env(broker, tmp_path, "r2", r2_port, oip=r2_oip))
        # the stream learned first: before the learner's group join it sits on version 1 too
        _wait(
            "the learner to learn the stream",
            lambda: (_ask(learner_port, {"op": "health"}) or {}).get("events_learned", 0) >= 4000,
        )
        _wait("the learner to settle on a version", lambda: _settled(learner_port))
        settled = _wait(
            "both replicas at the learner's version", lambda: _same(learner_port, r1_port, r2_port)
        )
        askers.append(Asker(r2_port))
        askers[-1].start()
        # the replica speaks the Open Inference Protocol too: the same answer, the same version
        by_oip = _oip_infer(r2_oip)
        by_socket = _ask(r2_port, {"op": "predict", "features": ROW})
        assert int(by_oip["model_version"]) == by_socket["version"] == settled
        prediction = next(o for o in by_oip["outputs"] if o["name"] == "prediction")
        assert prediction["data"] == [by_socket["prediction"]]

        # SIGKILL replica 1 and start it again: it serves the current version again
        for a in askers[:2]:
            a.stop.set()
            a.join(10)
        r1.kill()
        r1.wait(10)
        r1 = start("serve", _env(broker, tmp_path, "r1", r1_port, r1_metrics))
        _wait("replica 1 back at the current version", lambda: _same(learner_port, r1_port))
        assert _version(r1_port) == settled
        askers.append(Asker(r1_port))
        askers[-1].start()

        # a rollback on the learner reaches the replicas; a replica refuses one itself
        kept = _ask(learner_port, {"op": "versions"})["versions"]
        target = kept[0]["version"]
        back = _ask(learner_port, {"op": "rollback", "version": target})
        assert back["ok"] and back["rolled_back_from"] == target
        _wait(
            "the rollback at both replicas",
            lambda: _version(r1_port) == back["version"] == _version(r2_port),
        )
        _wait("the pin at replica 2", lambda: _ask(r2_port, {"op": "versions"})["pinned"])
        refused = _ask(r2_port, {"op": "rollback", "version": target})
        assert refused["ok"] is False and refused["error"] == "forbidden"
        info = _ask(r1_port, {"op": "info"})
        assert info["rolled_back_from"] == target
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{r1_metrics}/metrics").read().decode()
        assert "learnd_replica_snapshots_served_total 2.0" in metrics  # catch-up, rollback
        assert 'learnd_replica_rejected_total{reason="checksum"} 0.0' in metrics
        for a in askers[2:]:
            a.stop.set()
            a.join(10)
    finally:
        errs = [_stop(p) for p in reversed(procs)]
        broker.stop()
        for err in errs:
            print("----", err[-3000:])
    for a in askers:
        assert a.failed == []
        assert a.versions, "every asker got answers"
        assert a.versions == sorted(a.versions), "a version went backwards on a connection"
    assert len(set(askers[0].versions)) > 1, "replica 1 hot-swapped while being asked"
    assert all(p.returncode in (0, -signal.SIGKILL) for p in procs), errs
