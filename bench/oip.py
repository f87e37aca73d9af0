"""Open Inference Protocol latency and throughput of a real `learnd run`, beside its NDJSON socket.

    .venv/bin/python bench/oip.py                  # 100k events of backlog
    .venv/bin/python bench/oip.py --events 300000  # a longer learning phase

Fills a topic (embedded tansu) with the drifting SEA stream and starts `learnd run` (its own
process; serving.processes 1; OIP over HTTP and gRPC on). While it learns the backlog flat out,
one client sends sequential single OIP/HTTP inferences; once the daemon is idle, single-client
latency over OIP/HTTP, OIP/gRPC and NDJSON, then N client processes (depth 1) over NDJSON and
over OIP/HTTP, one after the other in the same run. Clients are light (bench/_oip_clients.py,
bench/_clients.py): a prepared request on a keep-alive connection, so the numbers are the
server's, plus loopback.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._oip_clients import GrpcClient, HttpClient  # noqa: E402
from bench._soak_daemon import (  # noqa: E402
    LEARND,
    add_set_option,
    daemon_env,
    env_keys,
    info,
    produce,
)
from bench.serving import concurrent, learned, pct, sequential  # noqa: E402
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from learnd.adapters.kafka.topics import ensure_topics  # noqa: E402
from learnd.adapters.settings import build_config  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402


def oip_sequential(client, n=None, until=None):
    lat = []
    for _ in range(50):
        client.infer()
    while True:
        t = time.perf_counter()
        client.infer()
        lat.append(time.perf_counter() - t)
        if n and len(lat) >= n:
            break
        if until and len(lat) % 200 == 0 and until():
            break
    client.close()
    return lat


def _http_client(port, barrier, seconds, results):
    from bench._oip_clients import run_http

    barrier.wait()
    results.put(run_http(port, time.time() + 0.5, seconds))


def http_concurrent(port, clients, seconds):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    procs = [
        ctx.Process(target=_http_client, args=(port, barrier, seconds, results))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in out) / seconds, [x for r in out for x in r[1]]


def row(name, lat, other=""):
    return (
        f"| {name} | {len(lat):,} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} | "
        f"{max(lat) * 1e6:.0f} | {other} |"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--n", type=int, default=5000, help="requests per idle single-client run")
    add_set_option(ap)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="learnd-oip-"))
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        topic = f"oip-{time.monotonic_ns()}"
        port, http_port, grpc_port = free_port(), free_port(), free_port()
        env = daemon_env(broker.bootstrap, topic, tmp / "state", port, **env_keys(args.set))
        env["LEARND_SERVING__OIP_HTTP_PORT"] = str(http_port)
        env["LEARND_SERVING__OIP_GRPC_PORT"] = str(grpc_port)
        # the daemon's own topics (events and dead letters), from the daemon's own config
        ensure_topics(build_config(environ=env).kafka, partitions=2)
        produce(broker.bootstrap, topic, DriftingSEA(seed=3).take(args.events), 2)
        proc = subprocess.Popen([LEARND, "run"], env=env)
        try:
            while not (info(port) or {}).get("version"):
                time.sleep(0.05)
            n1, t1 = learned(port), time.monotonic()
            busy = oip_sequential(
                HttpClient(http_port), until=lambda: learned(port) >= args.events * 0.9
            )
            n2, t2 = learned(port), time.monotonic()
            while learned(port) < args.events:
                time.sleep(0.2)
            time.sleep(1.0)
            idle_http = oip_sequential(HttpClient(http_port), n=args.n)
            idle_grpc = oip_sequential(GrpcClient(grpc_port), n=args.n)
            idle_ndjson = sequential(port, n=args.n)
            nd_rate, nd = concurrent(port, args.clients, args.seconds, 1)
            http_rate, many_http = http_concurrent(http_port, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        "\nlearnd run, default model, serving.processes 1; clients in separate processes over "
        "loopback TCP\n"
    )
    print("| phase | requests | p50 us | p99 us | max us | other |")
    print("|---|---|---|---|---|---|")
    print(
        row(
            "learning, 1 OIP/HTTP client flat out",
            busy,
            f"learner {(n2 - n1) / (t2 - t1):,.0f} events/s meanwhile",
        )
    )
    print(row("idle, 1 OIP/HTTP client", idle_http))
    print(row("idle, 1 OIP/gRPC client", idle_grpc))
    print(row("idle, 1 NDJSON client", idle_ndjson))
    print(row(f"idle, {args.clients} NDJSON clients", nd, f"{nd_rate:,.0f} predictions/s"))
    print(
        row(
            f"idle, {args.clients} OIP/HTTP clients",
            many_http,
            f"{http_rate:,.0f} predictions/s ({http_rate / nd_rate:.0%} of NDJSON's)",
        )
    )


if __name__ == "__main__":
    main()
