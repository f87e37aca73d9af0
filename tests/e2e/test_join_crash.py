"""The label join across SIGKILLs: unlabelled events and their labels on two topics of a real
broker; the daemon is killed at a crash point of the join, restarted, and the final checkpoint's
audit must show every id learned exactly once, with the join's positions and no row pending.

2 partitions x 500 unlabelled events with ids 0..999; the labels come on their own topic, in
another order (ids 999..0), so that some labels are read before their features.
"""

from __future__ import annotations

import signal
import subprocess
import time

import orjson
import pytest
from kafka import KafkaProducer

from learnd.adapters.kafka.broker import free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.settings import build_config
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA

from .test_cli import LEARND
from .test_crash import _env, _logs, broker  # noqa: F401 - the module's broker fixture

pytestmark = pytest.mark.e2e
N = 1000
POINTS = ("after_poll", "after_join", "after_learn", "after_rename")


def _join_env(tmp_path, bootstrap, name, port):
    env = _env(tmp_path, bootstrap, f"join-{name}", port)
    return {
        **env,
        "LEARND_KAFKA__LABELS_TOPIC": f"crash-join-{name}-labels",
        "LEARND_KAFKA__PREDICTIONS_TOPIC": f"crash-join-{name}-predictions",
        "LEARND_LABELS__MODE": "join",
        "LEARND_LABELS__TTL_S": "600",
        "LEARND_CHECKPOINT__EVERY_EVENTS": "150",
    }


@pytest.mark.parametrize("point", POINTS)
def test_join_crash_then_restart_learns_every_label_exactly_once(tmp_path, broker, point):  # noqa: F811
    port = free_port()
    env = _join_env(tmp_path, broker, point, port)
    cfg = build_config(environ=env)
    k = cfg.kafka
    ensure_topics(cfg.kafka, partitions=2)
    ensure_topics(k.model_copy(update={"topic": k.labels_topic}), partitions=2)
    ensure_topics(k.model_copy(update={"topic": k.predictions_topic}), partitions=1)
    events = list(DriftingSEA(seed=43).take(N))
    producer = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    for i, e in enumerate(events):
        unlabelled = {"id": i, "features": e["features"]}
        producer.send(k.topic, orjson.dumps(unlabelled), partition=i % 2)
    for i in reversed(range(N)):
        label = {"id": i, "label": events[i]["label"], "ts": time.time()}
        producer.send(k.labels_topic, orjson.dumps(label), partition=i % 2)
    producer.flush(30)
    producer.close()

    crashed = subprocess.run(
        [LEARND, "run"],
        env={**env, "LEARND_TEST_FAILPOINT": f"{point}:3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    assert any(r.get("event") == "failpoint" for r in _logs(crashed.stderr))

    proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        trained = 0
        while trained < N:
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

    state = LocalCheckpointStore(tmp_path / "state").load_latest()
    counts = state["audit"].numpy()[:N]
    assert (counts == 1).all(), (
        f"ids learned 0 times: {(counts == 0).sum()}, more than once: {(counts > 1).sum()}"
    )
    assert state["audit"].numpy()[N:].sum() == 0
    assert state["positions"] == {0: N // 2, 1: N // 2}
    labels = state["labels"]
    assert labels["positions"][k.labels_topic] == {0: N // 2, 1: N // 2}
    assert labels["join"]["ids"] == [] and labels["join"]["early"] == []
    assert labels["join"]["outcomes"]["matched"] == N
