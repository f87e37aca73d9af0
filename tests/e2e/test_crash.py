"""RELIABILITY tests 2 and 23: SIGKILL at each crash point, restart, audit the model state and
the versions served.

2 partitions x 1,000 ids. The daemon is killed at the 3rd hit of a failpoint, restarted without
it, and stopped gracefully once everything is consumed. The final checkpoint's audit must show
every id applied exactly once, and after the restart the first offset consumed on each
partition must equal the checkpointed one. Across both runs no version number may name two
models (each publish logs its version and a digest of its weights), and the first version the
restarted daemon serves is the model that was served when its checkpoint was written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import orjson
import pytest
from kafka import KafkaProducer

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.settings import build_config
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.failpoints import POINTS

from .test_cli import LEARND

pytestmark = pytest.mark.e2e
N_PER_PARTITION = 1000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("b") / "tansu.log").start()
    yield b.bootstrap
    b.stop()


def _env(tmp_path, bootstrap, name, port):
    return {
        **os.environ,
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LEARND_KAFKA__TOPIC": f"crash-{name}",
        "LEARND_KAFKA__DEAD_LETTER_TOPIC": f"crash-{name}-dlq",
        "LEARND_KAFKA__GROUP_ID": f"crash-{name}",
        "LEARND_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "LEARND_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "LEARND_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
        "LEARND_KAFKA__MAX_POLL_RECORDS": "200",
        "LEARND_SCHEMA__FEATURES": '["x1", "x2", "x3"]',
        "LEARND_CHECKPOINT__DIR": str(tmp_path / "state"),
        "LEARND_CHECKPOINT__EVERY_EVENTS": "300",
        "LEARND_CHECKPOINT__AUDIT_IDS": "true",
        "LEARND_LEARNING__PUBLISH_EVERY_S": "0.2",
        "LEARND_LEARNING__GATE__ENABLED": "false",  # publishes on schedule: a crash point
        "LEARND_COMPRESSION__ENABLED": "false",
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_METRICS__ENABLED": "false",
        "LEARND_LOG__FORMAT": "json",
        "LEARND_LOG__LEVEL": "DEBUG",  # each publish: its version and the digest of its weights
        "LEARND_CONFIG": "",
    }


def _wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # gone, or a zombie waiting for whoever inherited it to reap it
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} outlived the daemon")


def _logs(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("point", POINTS)
def test_crash_then_restart_applies_every_id_exactly_once(tmp_path, broker, point):
    port = free_port()
    env = _env(tmp_path, broker, point, port)
    cfg = build_config(environ=env)
    ensure_topics(cfg.kafka, partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    for i, e in enumerate(DriftingSEA(seed=41).take(2 * N_PER_PARTITION)):
        producer.send(cfg.kafka.topic, orjson.dumps(e), partition=i % 2)
    producer.flush(30)
    producer.close()

    nth = 2 if point == "after_publish" else 3  # publishes stop once all is learned
    crashed = subprocess.run(
        [LEARND, "run"],
        env={**env, "LEARND_TEST_FAILPOINT": f"{point}:{nth}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert any(r.get("event") == "failpoint" for r in _logs(crashed.stderr))
    for r in _logs(crashed.stderr):  # the consumer process did not outlive the daemon
        if r.get("event") == "consumer_start":
            _wait_gone(r["pid"])

    proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        trained = 0
        while trained < 2 * N_PER_PARTITION:
            assert time.monotonic() < deadline, f"only {trained} events learned after restart"
            time.sleep(0.3)
            try:
                with LearndClient.tcp("127.0.0.1", port) as c:
                    trained = c.health()["events_learned"]
            except OSError:
                continue  # not listening yet
        time.sleep(1.0)  # room for a duplicate to show up in the audit
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    logs = _logs(stderr)

    state = LocalCheckpointStore(tmp_path / "state").load_latest()
    audit = state["audit"].numpy()
    assert state["positions"] == {0: N_PER_PARTITION, 1: N_PER_PARTITION}
    assert len(audit) >= 2 * N_PER_PARTITION and audit[2 * N_PER_PARTITION :].sum() == 0
    counts = audit[: 2 * N_PER_PARTITION]
    assert (counts == 1).all(), (
        f"ids applied 0 times: {(counts == 0).sum()}, more than once: {(counts > 1).sum()}"
    )
    _assert_versions_name_one_model_each(_logs(crashed.stderr), logs)

    restored = [r for r in logs if r.get("event") == "restore"]
    start = {int(p): o for p, o in restored[0]["positions"].items()} if restored else {}
    firsts = {r["partition"]: r["offset"] for r in logs if r.get("event") == "first_record"}
    for partition, offset in firsts.items():
        assert offset == start.get(partition, 0), (partition, offset, start)


def _assert_versions_name_one_model_each(before: list[dict], after: list[dict]) -> None:
    models: dict[int, set[str]] = {}
    served_events = ("publish", "serve_restored")
    for r in before + after:
        if r.get("event") in served_events:
            models.setdefault(r["version"], set()).add(r["digest"])
    reused = {v: sorted(d) for v, d in models.items() if len(d) > 1}
    assert not reused, f"version numbers given to more than one model: {reused}"

    published_before = {r["version"]: r["digest"] for r in before if r.get("event") == "publish"}
    gated = [r["served_version"] for r in before if "served_version" in r]
    first = next(r for r in after if r.get("event") in served_events)
    if first["event"] == "publish":  # no checkpoint held a served version: a new model's first
        assert all(v is None for v in gated), (first, gated)
        return
    # the model served when the checkpoint was written, under a number of its own
    was = first["served_before_as"]
    assert published_before[was] == first["digest"], "the same weights as before the crash"
    assert was >= max((v for v in gated if v is not None), default=0), (was, gated)
    assert first["version"] > max(published_before), "a number the crashed run never used"
