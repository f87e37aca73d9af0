"""Hot swaps under load: client threads predicting while snapshots are published (in-process
serving, or serving processes reading shared memory), every answer checked against the version
that produced it."""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
from _progress import bar

from learnd.adapters.serving.client import LearndClient


def swaps(args):
    from learnd.adapters.serving.socket_server import PredictionServer
    from learnd.daemon.config import SchemaConfig, ServingConfig
    from learnd.daemon.serving.requests import RequestHandler
    from learnd.daemon.serving.snapshot import Draft, SnapshotRef
    from learnd.daemon.serving.weights import DenseWeights

    schema = SchemaConfig(task="binary", n_features=3)
    rng = np.random.default_rng(0)

    def draft(v):
        w = DenseWeights(
            (
                rng.normal(size=(3, 16)).astype(np.float32),
                rng.normal(size=(16, 1)).astype(np.float32),
            ),
            (np.zeros(16, np.float32), np.zeros(1, np.float32)),
            "relu",
            np.zeros(3, np.float32),
            np.ones(3, np.float32),
            0.0,
            1.0,
        )
        return Draft("binary", (0, 1), None, w, v, {})

    ref = SnapshotRef(keep=args.swaps + 2)
    ref.publish(draft(1))
    if args.processes:
        from learnd.adapters.serving.processes import ServingProcesses
        from learnd.daemon.config import LearndConfig

        cfg = LearndConfig.model_validate(
            {
                "schema": {"task": "binary", "n_features": 3},
                "serving": {
                    "tcp_port": 0,
                    "max_connections": 512,
                    "processes": args.processes,
                    "keep_versions": 10,
                },
            }
        )
        server = ServingProcesses(
            cfg,
            ref,
            RequestHandler(ref, schema),
            lambda: {"alive": True, "ready": True, "status": "ready"},
        )
    else:
        server = PredictionServer(
            RequestHandler(ref, schema), ServingConfig(tcp_port=0, max_connections=512)
        )
    server.start()
    x = [1.0, 2.0, 3.0]
    stop = threading.Event()
    results = []  # (thread, t, version, p1, latency)
    lock = threading.Lock()

    def client(tid):
        out = []
        with LearndClient.tcp(*server.tcp_address) as c:
            while not stop.is_set():
                t = time.perf_counter()
                ans = c.request({"op": "predict", "features": x}, check=False)
                out.append(
                    (
                        tid,
                        t,
                        ans.get("version"),
                        ans.get("scores", {}).get("1"),
                        time.perf_counter() - t,
                        ans.get("ok"),
                    )
                )
        with lock:
            results.extend(out)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    time.sleep(3)
    steady_end = time.perf_counter()
    for v in bar(args.swaps, "hot swaps", "swap", range(args.swaps)):
        ref.publish(draft(v + 2))
        time.sleep(args.interval)
    swap_end = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    server.stop()
    snaps = {s.version: s for s in ref.history()}
    failed = sum(1 for r in results if not r[5])
    mismatched = 0
    for r in results:
        if r[5]:
            expect = float(snaps[r[2]].predict_many(np.array([x]))[0, 1])
            mismatched += abs(round(expect, 6) - r[3]) > 1e-6
    backwards = 0
    by_thread = {}
    for r in sorted(results, key=lambda r: r[1]):
        if r[5]:
            backwards += r[2] < by_thread.get(r[0], 0)
            by_thread[r[0]] = r[2]
    steady = [r[4] for r in results if r[1] < steady_end]
    during = [r[4] for r in results if steady_end <= r[1] < swap_end]

    def p99(v):
        return statistics.quantiles(v, n=100)[98] * 1e6

    where = f"{args.processes} serving processes" if args.processes else "in-process serving"
    print(
        f"{where}, {args.threads} client threads, {args.swaps} swaps in "
        f"{swap_end - steady_end:.1f} s, "
        f"{len(results):,} requests"
    )
    print(
        f"failed: {failed}   answers not matching their version's reference: {mismatched}   "
        f"versions going backwards on a connection: {backwards}"
    )
    print(
        f"p99 steady {p99(steady):.0f} us   p99 during swaps {p99(during):.0f} us   "
        f"ratio {p99(during) / p99(steady):.2f}"
    )
