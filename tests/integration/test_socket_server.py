"""The prediction server over real TCP and Unix sockets (no broker needed)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from learnd.adapters.serving.client import LearndClient, LearndError
from learnd.adapters.serving.metrics import ServingMetrics
from learnd.adapters.serving.socket_server import PredictionServer
from learnd.daemon.config import SchemaConfig, ServingConfig
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

SCHEMA = SchemaConfig(task="binary", features=("a", "b"))


def draft(sign):
    w = DenseWeights(
        (np.full((2, 1), sign, np.float32),),
        (np.zeros(1, np.float32),),
        "relu",
        np.zeros(2, np.float32),
        np.ones(2, np.float32),
        0.0,
        1.0,
    )
    return Draft("binary", (0, 1), ("a", "b"), w, 0, {})


@pytest.fixture
def served(tmp_path):
    started = []

    def start(**serving):
        ref = SnapshotRef(keep=1000)
        ref.publish(draft(1.0))
        cfg = ServingConfig(tcp_port=0, unix_path=tmp_path / "l.sock", **serving)
        registry = CollectorRegistry()
        metrics = ServingMetrics(registry)
        server = PredictionServer(RequestHandler(ref, SCHEMA), cfg, metrics.observe)
        server.start()
        started.append(server)
        return server, ref, registry

    yield start
    for s in started:
        s.stop()


def raw_conn(server):
    s = socket.create_connection(server.tcp_address, timeout=5)
    return s, s.makefile("rb")


def test_tcp_and_unix_answer_with_version(served):
    server, ref, _ = served()
    with LearndClient.tcp(*server.tcp_address) as c:
        assert c.predict({"a": 1, "b": 2})["version"] == 1
    ref.publish(draft(-1.0))
    with LearndClient.unix(str(server.unix_path)) as c:
        ans = c.predict([1, 2])
        assert ans["version"] == 2 and ans["prediction"] == 0
        assert c.predict_many([[1, 1], [2, 2]])["version"] == 2


def test_pipelined_requests_answer_in_order(served):
    server, _, _ = served()
    s, f = raw_conn(server)
    s.sendall(
        b"".join(
            orjson.dumps({"op": "predict", "features": [i, i], "id": i}) + b"\n" for i in range(200)
        )
    )
    ids = [orjson.loads(f.readline())["id"] for _ in range(200)]
    assert ids == list(range(200))
    s.close()


def test_malformed_request_gets_error_and_connection_survives(served):
    server, _, _ = served()
    s, f = raw_conn(server)
    s.sendall(b"{not json\n")
    assert orjson.loads(f.readline())["error"] == "bad_request"
    s.sendall(b'{"op": "predict", "features": [1]}\n')
    assert orjson.loads(f.readline())["error"] == "wrong_dimension"
    s.sendall(b'{"op": "predict", "features": [1, 1]}\n')
    assert orjson.loads(f.readline())["ok"] is True
    s.close()


def test_oversized_frame_is_refused_before_it_is_read_whole(served):
    server, _, _ = served(max_request_bytes=1024)
    s, f = raw_conn(server)
    s.sendall(b'{"op": "predict", "features": [' + b"1," * 5000)
    ans = orjson.loads(f.readline())
    assert ans["error"] == "too_large"
    assert f.readline() == b""  # then the connection is closed
    s.close()
    with LearndClient.tcp(*server.tcp_address) as c:  # and the server carries on
        assert c.predict([1, 1])["ok"]


def test_token_required_constant_time_and_not_echoed_or_logged(served, caplog):
    caplog.set_level("DEBUG")
    server, _, registry = served(token="t0ken-123")
    with LearndClient.tcp(*server.tcp_address) as c:
        with pytest.raises(LearndError, match="unauthorized"):
            c.predict([1, 1])
    with LearndClient.tcp(*server.tcp_address, token="wrong") as c:
        with pytest.raises(LearndError, match="unauthorized"):
            c.predict([1, 1])
    with LearndClient.tcp(*server.tcp_address, token="t0ken-123") as c:
        ans = c.predict([1, 1])
        assert ans["ok"] and "t0ken-123" not in orjson.dumps(ans).decode()
    exposition = "\n".join(str(m) for m in registry.collect())
    assert "t0ken-123" not in exposition
    assert (
        registry.get_sample_value(
            "learnd_prediction_requests_total", {"op": "predict", "outcome": "unauthorized"}
        )
        == 2
    )
    assert "t0ken-123" not in caplog.text


def test_300_idle_connections_cannot_starve_a_real_client(served):
    server, _, _ = served()  # defaults: 256 connections, eviction after 1 s idle
    idle = [raw_conn(server) for _ in range(300)]
    time.sleep(1.2)
    for _ in range(3):
        with LearndClient.tcp(*server.tcp_address) as c:
            assert c.predict([1, 1])["ok"]
    assert server.evicted_connections >= 1  # the first evicts; later ones reuse its freed slot
    for s, _ in idle:
        s.close()


def test_connection_cap_and_idle_timeout(served):
    server, _, _ = served(max_connections=3, idle_timeout_s=0.5, evict_idle_after_s=60)
    idle = [raw_conn(server) for _ in range(3)]
    time.sleep(0.1)
    s, f = raw_conn(server)
    assert orjson.loads(f.readline())["error"] == "too_many_connections"
    s.close()
    time.sleep(0.8)  # the idle ones are dropped, so a real client gets in
    with LearndClient.tcp(*server.tcp_address) as c:
        assert c.predict([1, 1])["ok"]
    for s, f in idle:
        assert f.readline() == b""
        s.close()


def test_versions_never_go_backwards_while_publishing(served):
    server, ref, _ = served()
    stop = threading.Event()

    def publisher():
        sign = 1.0
        while not stop.is_set():
            sign = -sign
            ref.publish(draft(sign))
            time.sleep(0.0005)

    t = threading.Thread(target=publisher)
    t.start()
    failures, versions = 0, []
    try:
        with LearndClient.tcp(*server.tcp_address) as c:
            for _ in range(500):
                ans = c.request({"op": "predict", "features": [1, 1]}, check=False)
                if not ans.get("ok"):
                    failures += 1
                    continue
                versions.append(ans["version"])
                # odd versions were published with +1 weights, even ones with -1
                assert ans["prediction"] == (1 if ans["version"] % 2 else 0)
    finally:
        stop.set()
        t.join()
    assert failures == 0 and versions == sorted(versions) and versions[-1] > versions[0]
