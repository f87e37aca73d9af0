"""Load-generating clients for bench/serving.py, kept light (no torch) so that spawned client
processes start in a fraction of a second."""

from __future__ import annotations

import socket
import time

import orjson

REQUEST = orjson.dumps({"op": "predict", "features": [5.0, 4.0, 1.0]}) + b"\n"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run(port: int, start_at: float, seconds: float, depth: int) -> tuple[int, list[float]]:
    """From wall time ``start_at`` for ``seconds``: send ``depth`` requests at a time (1: strictly
    sequential) and read their answers; returns (answers, per-batch latencies in seconds)."""
    sock = connect(port)
    f = sock.makefile("rb")
    batch = REQUEST * depth
    for _ in range(20):
        sock.sendall(REQUEST)
        f.readline()
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    answers, lat = 0, []
    while time.time() < end:
        t = time.perf_counter()
        sock.sendall(batch)
        for _ in range(depth):
            line = f.readline()
            if b'"ok":true' not in line:
                raise RuntimeError(f"failed answer: {line[:200]!r}")
        lat.append(time.perf_counter() - t)
        answers += depth
    f.close()
    sock.close()
    return answers, lat


def flood(port: int, start_at: float, seconds: float, kind: str) -> int:
    """One connection that tries to hold the server up, from wall time ``start_at`` for
    ``seconds``; returns the answers it read. ``kind``: ``versions`` (10,000 control requests
    pipelined, then their answers read, again and again), ``predict`` (the same with 10,000
    predictions), or ``no_read`` (predictions pipelined, answers never read)."""
    sock = connect(port)
    f = sock.makefile("rb")
    op = orjson.dumps({"op": "versions"}) + b"\n" if kind == "versions" else REQUEST
    burst = op * 10_000
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    answers = 0
    if kind == "no_read":
        sock.setblocking(False)
        while time.time() < end:
            try:
                sock.send(burst)
            except BlockingIOError:
                time.sleep(0.01)
    else:
        while time.time() < end:
            sock.sendall(burst)
            for _ in range(10_000):
                f.readline()
            answers += 10_000
    f.close()
    sock.close()
    return answers
