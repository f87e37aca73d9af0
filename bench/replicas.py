"""Serving replicas: publish-to-replica latency, failed requests across publishes, and
predictions/s with 1 and 2 replicas.

An embedded broker, two ``learnd serve`` processes (one serving process each), and in this
process a :class:`~learnd.adapters.kafka.models_publisher.ModelsPublisher` on a snapshot
reference, the learner's writer without the learner: ``--publishes`` snapshots at ``--rate``
per second. A watcher thread per replica asks ``health`` over one connection and notes when
each version is first answered; a client process per replica asks ``predict`` meanwhile and
counts failed answers and versions that went backwards. Then predictions/s of pipelined
clients against 1 replica, then 2.

    nice -n 10 .venv/bin/python bench/replicas.py [--publishes 200] [--rate 10] [--hidden 64,64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.models_publisher import ModelsPublisher
from learnd.adapters.serving.client import LearndClient
from learnd.daemon.config import KafkaConfig
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

LEARND = shutil.which("learnd", path=str(Path(sys.executable).parent)) or "learnd"
REQUEST = orjson.dumps({"op": "predict", "features": [5.0, 4.0, 1.0]}) + b"\n"


def draft(seed: int, hidden: tuple[int, ...]) -> Draft:
    rng = np.random.default_rng(seed)
    sizes = (3, *hidden, 1)
    weights = tuple(
        rng.normal(size=(a, b)).astype(np.float32) / np.sqrt(a)
        for a, b in zip(sizes, sizes[1:], strict=False)
    )
    biases = tuple(np.zeros(b, np.float32) for b in sizes[1:])
    w = DenseWeights(
        weights, biases, "relu", np.zeros(3, np.float32), np.ones(3, np.float32), 0.0, 1.0
    )
    return Draft("binary", (0, 1), ("x1", "x2", "x3"), w, seed, {})


def replica(bootstrap: str, topic: str, state: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LEARND_KAFKA__MODELS_TOPIC": topic,
        "LEARND_SCHEMA__FEATURES": '["x1", "x2", "x3"]',
        "LEARND_CHECKPOINT__DIR": str(state),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_METRICS__ENABLED": "false",
        "LEARND_LOG__LEVEL": "WARNING",
    }
    return subprocess.Popen([LEARND, "serve"], env=env)


def version(port: int) -> int | None:
    try:
        with LearndClient.tcp("127.0.0.1", port) as c:
            return c.request({"op": "health"}, check=False).get("version")
    except OSError:
        return None


def watch(port: int, seen: dict[int, float], stop: threading.Event) -> None:
    with LearndClient.tcp("127.0.0.1", port) as c:
        while not stop.is_set():
            v = c.request({"op": "health"}, check=False).get("version")
            if v is not None and v not in seen:
                seen[v] = time.time()
            time.sleep(0.001)


def asker(port: int, seconds: float, depth: int, pace: float = 0.0) -> tuple[int, int, int]:
    """(answers, failed, versions gone backwards) of one connection for ``seconds``, at most
    one round of ``depth`` requests per ``pace`` seconds (0: as fast as answered)."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sock.makefile("rb")
    end = time.time() + seconds
    answers = failed = backwards = last = 0
    while time.time() < end:
        if pace:
            time.sleep(pace)
        sock.sendall(REQUEST * depth)
        for _ in range(depth):
            answer = orjson.loads(f.readline())
            answers += 1
            if not answer.get("ok"):
                failed += 1
                continue
            backwards += answer["version"] < last
            last = max(last, answer["version"])
    sock.close()
    return answers, failed, backwards


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def throughput(pool, ports: list[int], per_replica: int, seconds: float, depth: int) -> float:
    jobs = [pool.apply_async(asker, (p, seconds, depth)) for p in ports for _ in range(per_replica)]
    return sum(j.get()[0] for j in jobs) / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--publishes", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10.0, help="publishes per second")
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    args = ap.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    cfg = KafkaConfig(bootstrap_servers=broker.bootstrap, models_topic="bench-models")
    ref = SnapshotRef()
    pub = ModelsPublisher(cfg, ref)
    pub.start()
    ref.publish(draft(0, hidden))
    pool = mp.get_context("spawn").Pool(4)
    pool.map(time.sleep, [0.1] * 4)  # started before the replicas, not beside them
    ports = [free_port(), free_port()]
    procs = []
    try:
        for i, port in enumerate(ports):
            t0 = time.monotonic()
            procs.append(replica(broker.bootstrap, "bench-models", tmp / f"r{i}", port))
            while version(port) != 1:
                time.sleep(0.02)
            print(
                f"replica {i + 1} served the newest version {time.monotonic() - t0:.2f} s "
                "after `learnd serve` was started"
            )
        seen = [dict[int, float]() for _ in ports]
        stop = threading.Event()
        watchers = [
            threading.Thread(target=watch, args=(p, s, stop))
            for p, s in zip(ports, seen, strict=True)
        ]
        for w in watchers:
            w.start()
        duration = args.publishes / args.rate
        # paced (about 1,000 requests/s a replica): the cores stay shared, not saturated
        askers = [pool.apply_async(asker, (p, duration + 2, 1, 0.001)) for p in ports]
        published: dict[int, float] = {}
        for i in range(args.publishes):
            time.sleep(1 / args.rate)
            published[ref.publish(draft(i + 1, hidden)).version] = time.time()
        last = max(published)
        deadline = time.monotonic() + 10
        while not all(last in s for s in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for w in watchers:
            w.join()
        asked = [a.get() for a in askers]
        delays = [1000 * (s[v] - t) for s in seen for v, t in published.items() if v in s]
        reached = sum(v in s for s in seen for v in published)
        print(
            f"\nsnapshot of {pub.bytes // max(1, pub.records)} bytes, hidden {hidden}, "
            f"{args.publishes} publishes at {args.rate:g}/s, 2 replicas"
        )
        print("| publish to replica | p50 ms | p99 ms | max ms | versions seen | dropped |")
        print("|---|---|---|---|---|---|")
        print(
            f"| first answer naming it | {pct(delays, 50):.1f} | {pct(delays, 99):.1f} | "
            f"{max(delays):.1f} | {reached} of {2 * args.publishes} (newest: both) | "
            f"{pub.dropped} |"
        )
        w = pub.latency
        print(
            f"\nlearner side: {pub.sent} snapshots written, {pub.dropped} dropped for a newer "
            f"one, mean write {1000 * w.sum / max(1, w.count):.1f} ms (served to acknowledged)"
        )
        print(
            f"\nrequests during the publishes: {sum(a[0] for a in asked)}, failed "
            f"{sum(a[1] for a in asked)}, versions backwards {sum(a[2] for a in asked)}"
        )
        print("\n| replicas | client connections | depth | predictions/s |")
        print("|---|---|---|---|")
        for n in (1, 2):
            rate = throughput(pool, ports[:n], 2 // n, args.seconds, 32)
            print(f"| {n} | 2 | 32 | {rate:,.0f} |")
    finally:
        pool.terminate()
        for p in procs:
            p.terminate()
            p.wait(30)
        pub.close()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
