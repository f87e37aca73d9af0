"""Serving from separate processes (serving.processes >= 1): same answers, same guarantees."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from learnd.adapters.serving.client import LearndClient
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config
from tests.integration.conftest import daemon_on_list, wait_for

X = [5.0, 4.0, 1.0]


def predict(port):
    with LearndClient.tcp("127.0.0.1", port) as c:
        return c.request({"op": "predict", "features": X}, check=False)


@pytest.fixture
def daemon(tmp_path):
    cfg = sea_config(
        tmp_path,
        serving={"processes": 2, "unix_path": str(tmp_path / "learnd.sock")},
        learning={"publish_every_s": 0.05, "gate": {"window": 300}},
    )
    with daemon_on_list(cfg, DriftingSEA(seed=8).take(30_000)) as d:
        yield d


def test_serving_processes_follow_publishes_forward_rollback_and_survive_a_kill(daemon):
    port = daemon.server.tcp_address[1]
    control = daemon.server.channel.names[0]
    assert len(daemon.server._procs) == 2
    wait_for(lambda: (predict(port).get("version") or 0) >= 3, 60, what="a third version served")

    # answers on one connection never go backwards while the learner publishes
    seen = []
    with LearndClient.tcp("127.0.0.1", port) as c:
        for _ in range(400):
            answer = c.request({"op": "predict", "features": X})
            assert answer["prediction"] in (0, 1)
            seen.append(answer["version"])
    assert seen == sorted(seen)
    with LearndClient.unix(str(daemon.server.unix_path)) as c:
        assert c.predict(X)["ok"] and c.health()["ready"] is True

    # rollback through a serving process: the daemon decides, every process serves it
    with LearndClient.tcp("127.0.0.1", port) as c:
        for _ in range(20):  # publishing goes on: the version asked for may be evicted meanwhile
            kept = [v["version"] for v in c.request({"op": "versions"})["versions"]]
            answer = c.request({"op": "rollback", "version": kept[0]}, check=False)
            if answer["ok"]:
                break
            assert answer["error"] == "unknown_version", answer
        assert answer["rolled_back_from"] == kept[0] and answer["pinned"]
        assert c.predict(X)["version"] == answer["version"]
    for _ in range(10):  # fresh connections, whichever process accepts them
        assert predict(port)["version"] == answer["version"]
    assert daemon.pipeline.ref.pinned
    with LearndClient.tcp("127.0.0.1", port) as c:
        assert c.request({"op": "unpin"})["was_pinned"] is True

    # request metrics from the serving processes are summed into the daemon's registry
    def served_requests():
        fam = {f.name: f for f in daemon.registry.collect()}.get("learnd_prediction_requests")
        return sum(s.value for s in fam.samples) if fam else 0

    # 400 + 2 (unix) + 3 (versions, rollback, predict) + 10 + 1 (unpin) + the waits before
    wait_for(lambda: served_requests() >= 417, 10, what="summed request metrics")

    # SIGTERM and SIGINT meant for the daemon often reach its whole process group (systemd,
    # `timeout`, Ctrl-C): the serving processes ignore them and answer on until the daemon,
    # once it has checkpointed, stops them itself
    for proc in daemon.server._procs:
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    assert all(p.is_alive() for p in daemon.server._procs) and daemon.server.restarts == 0
    for _ in range(20):
        assert predict(port)["ok"]

    # a serving process killed outright is restarted; the socket stays open meanwhile
    victim = daemon.server._procs[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: daemon.server.restarts == 1, 20, what="a restart")
    for _ in range(20):
        assert predict(port)["ok"]

    daemon.stop()
    daemon.join(30)
    assert not Path(f"/dev/shm/{control}").exists()
    assert all(not p.is_alive() for p in daemon.server._procs)
