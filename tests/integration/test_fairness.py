"""RELIABILITY test 21: no connection can hold up another's predictions.

A control operation (``versions``, ``rollback``, ``unpin``) runs off the serving event loop, so
while one is held up (a serving process forwards it to the daemon, which may be busy) or one
connection floods them, other connections are answered. The delay bound itself is measured in
``bench/serving.py --fairness``; these tests assert the behaviour, with a control operation
that does not return until the test lets it.
"""

from __future__ import annotations

import socket
import threading

import numpy as np
import orjson
import pytest

from learnd.adapters.serving.client import LearndClient
from learnd.adapters.serving.socket_server import PredictionServer
from learnd.daemon.config import SchemaConfig, ServingConfig
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

pytestmark = pytest.mark.integration

SCHEMA = SchemaConfig(task="binary", features=("a", "b"))
PREDICT = orjson.dumps({"op": "predict", "features": [1, 2]}) + b"\n"


class HeldControl(RequestHandler):
    """Control operations wait for ``release``; everything else is answered as usual."""

    def __init__(self, ref):
        super().__init__(ref, SCHEMA)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.control_calls = 0

    def handle(self, req):
        if isinstance(req, dict) and req.get("op") == "versions":
            self.control_calls += 1
            self.entered.set()
            assert self.release.wait(30), "the test never released the control operation"
        return super().handle(req)


@pytest.fixture
def server():
    ref = SnapshotRef()
    w = DenseWeights(
        (np.ones((2, 1), np.float32),),
        (np.zeros(1, np.float32),),
        "relu",
        np.zeros(2, np.float32),
        np.ones(2, np.float32),
        0.0,
        1.0,
    )
    ref.publish(Draft("binary", (0, 1), ("a", "b"), w, 0, {}))
    handler = HeldControl(ref)
    srv = PredictionServer(handler, ServingConfig(tcp_port=0))
    srv.start()
    yield srv, handler
    handler.release.set()
    srv.stop()


def test_predictions_are_answered_while_another_connection_floods_control_operations(server):
    srv, handler = server
    flooder = socket.create_connection(srv.tcp_address, timeout=30)
    n = 2000
    flooder.sendall(b"".join(orjson.dumps({"op": "versions", "id": i}) + b"\n" for i in range(n)))
    assert handler.entered.wait(10)
    try:
        # the first control operation is held: the other client is answered all the same
        with LearndClient.tcp(*srv.tcp_address, timeout=5) as c:
            for _ in range(20):
                assert c.predict([1, 2])["ok"]
            assert handler.control_calls == 1  # one at a time per connection, in order
    finally:
        handler.release.set()
    f = flooder.makefile("rb")
    ids = [orjson.loads(f.readline())["id"] for _ in range(n)]
    assert ids == list(range(n))  # every control answer, in request order
    assert handler.control_calls == n
    flooder.close()


def test_a_connection_answers_in_order_around_its_control_operation(server):
    srv, handler = server
    handler.release.set()
    s = socket.create_connection(srv.tcp_address, timeout=10)
    reqs = [{"op": "predict", "features": [i, i], "id": i} for i in range(600)]
    reqs[300] = {"op": "versions", "id": 300}
    s.sendall(b"".join(orjson.dumps(r) + b"\n" for r in reqs))
    f = s.makefile("rb")
    answers = [orjson.loads(f.readline()) for _ in reqs]
    assert [a["id"] for a in answers] == list(range(600))
    assert "versions" in answers[300] and all(a["ok"] for a in answers)
    s.close()


def test_a_client_that_pipelines_without_reading_holds_up_no_one(server):
    srv, _ = server
    hog = socket.create_connection(srv.tcp_address, timeout=30)
    hog.setblocking(False)
    sent = 0
    chunk = PREDICT * 4096
    stalled = 0
    while stalled < 50:  # write until the server stops reading from this client
        try:
            sent += hog.send(chunk)
            stalled = 0
        except BlockingIOError:
            stalled += 1
            threading.Event().wait(0.02)
    assert sent > 1 << 20
    with LearndClient.tcp(*srv.tcp_address, timeout=5) as c:
        for _ in range(50):
            assert c.predict([1, 2])["ok"]
    hog.close()
