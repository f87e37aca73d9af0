"""The OIP/HTTP listener keeps the NDJSON socket's limits: idle connections cannot starve a real
client (cap with eviction of the idlest), an endless request head is cut off, a connection that
says nothing is closed after the idle timeout, and the token is required everywhere."""

from __future__ import annotations

import socket

import numpy as np
import orjson
import pytest

pytest.importorskip("uvicorn", reason="the oip extra")

from learnd.adapters.serving.oip_http import OipHttpApp  # noqa: E402
from learnd.adapters.serving.oip_http_server import OipHttpServer, bind_http  # noqa: E402
from learnd.daemon.config import SchemaConfig, ServingConfig  # noqa: E402
from learnd.daemon.serving.oip import OipModel  # noqa: E402
from learnd.daemon.serving.snapshot import Draft, SnapshotRef  # noqa: E402
from learnd.daemon.serving.weights import DenseWeights  # noqa: E402
from tests.integration.conftest import wait_for  # noqa: E402

BODY = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [5, 4, 1]}]}
)


@pytest.fixture
def server():
    w = DenseWeights(
        (np.ones((3, 1), np.float32),),
        (np.zeros(1, np.float32),),
        "relu",
        np.zeros(3, np.float32),
        np.ones(3, np.float32),
        0.0,
        1.0,
    )
    ref = SnapshotRef()
    ref.publish(Draft("binary", (0, 1), ("a", "b", "c"), w, 0, {}))
    cfg = ServingConfig(
        oip_http_port=0,
        token="t0k",
        max_connections=4,
        evict_idle_after_s=0.0,
        idle_timeout_s=1.0,
        max_request_bytes=4096,
    )
    model = OipModel(ref, SchemaConfig(task="binary", features=("a", "b", "c")), "learnd")
    srv = OipHttpServer(OipHttpApp(model, "t0k", cfg.max_request_bytes), cfg, bind_http(cfg))
    srv.start()
    yield srv
    srv.stop()


def infer(address, token="t0k"):
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(
            b"POST /v2/models/learnd/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n"
            b"content-length: %d\r\n\r\n%s" % (token.encode(), len(BODY), BODY)
        )
        return s.recv(65536)


def closed(sock) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_cannot_starve_a_client_and_are_closed_after_the_timeout(server):
    idle = [socket.create_connection(server.address, timeout=10) for _ in range(12)]
    for _ in range(5):  # each new client evicts the connection idle longest
        assert infer(server.address).startswith(b"HTTP/1.1 200 ")
    for s in idle:
        s.settimeout(0.2)
    wait_for(lambda: all(closed(s) for s in idle), 15, what="idle connections closed")
    # and forgotten, evicted ones included (uvicorn's shutdown waits for the ones it knows)
    state = server.server.server_state
    wait_for(lambda: not state.connections, 10, what="no connection left")
    for s in idle:
        s.close()


def test_a_request_head_over_the_cap_closes_the_connection_and_the_token_is_required(server):
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 8192)
        s.settimeout(5)
        assert closed(s)
    assert infer(server.address, token="wrong").startswith(b"HTTP/1.1 401 ")
    assert infer(server.address).startswith(b"HTTP/1.1 200 ")


def test_answers_are_not_held_back_by_nagle(server):
    # uvicorn writes an answer's head and body separately: without TCP_NODELAY the body waits
    # for the client's delayed ACK (about 40 ms a request)
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t0k\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        (conn,) = server.server.server_state.connections
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
