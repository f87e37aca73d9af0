"""Prediction latency and throughput of a real `learnd run`, idle and while it learns flat out.

    .venv/bin/python bench/serving.py                  # 300k events of backlog
    .venv/bin/python bench/serving.py --events 100000  # quicker
    .venv/bin/python bench/serving.py --fairness 5     # and one client against a flooder

Fills a topic (embedded tansu) with the drifting SEA stream, then starts `learnd run` as its own
process. While it works through the backlog at full speed, one client (this process) sends
sequential single predictions over loopback TCP; once the backlog is learned and the daemon is
idle, the same client measures again, then N client processes measure throughput together.
Every client is a separate process from the daemon, as in production. With ``--fairness S``
the idle daemon is then measured against a connection that floods it (control operations,
pipelined predictions, pipelining without reading), S seconds each.

The request path without the socket (bytes in to bytes out per line, the forward, a batch of
100), beside a plain asyncio + numpy NDJSON server's, is in bench/request_path.py; that server
itself, over the same socket and clients, is measured here after learnd is stopped (the rows
"anchor"; ``--no-anchor`` skips them).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._soak_daemon import (  # noqa: E402
    LEARND,
    add_set_option,
    daemon_env,
    env_keys,
    info,
    produce,
)
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from learnd.adapters.kafka.topics import ensure_topics  # noqa: E402
from learnd.adapters.serving.client import LearndClient  # noqa: E402
from learnd.adapters.settings import build_config  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402

X = [5.0, 4.0, 1.0]


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1)))] * 1e6


def sequential(port, seconds=None, until=None, n=None, pace=None):
    """Sequential predictions, ``pace`` seconds apart if given; returns latencies (s). Stops after
    ``seconds``, ``n`` requests, or when ``until()`` is true (checked every 200 requests)."""
    lat = []
    end = time.monotonic() + seconds if seconds else None
    with LearndClient.tcp("127.0.0.1", port) as c:
        for _ in range(50):  # warm the connection
            c.predict(X)
        while True:
            t = time.perf_counter()
            c.request({"op": "predict", "features": X})
            lat.append(time.perf_counter() - t)
            if pace and (rest := pace - (time.perf_counter() - t)) > 0:
                time.sleep(rest)
            if n and len(lat) >= n:
                break
            if end and time.monotonic() > end:
                break
            if until and len(lat) % 200 == 0 and until():
                break
    return lat


def _client(port, barrier, seconds, depth, results):
    from bench._clients import run

    barrier.wait()  # every client process imported, connected... and starts together
    results.put(run(port, time.time() + 0.5, seconds, depth))


def concurrent(port, clients, seconds, depth):
    """``clients`` processes, started together; returns (answers/s, batch latencies)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(port, barrier, seconds, depth, results))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    total = sum(r[0] for r in out)
    return total / seconds, [x for r in out for x in r[1]]


def _flooder(port, barrier, seconds, kind, results):
    from bench._clients import flood

    barrier.wait()  # imported and ready: flood from now on
    results.put(flood(port, time.time(), seconds, kind))


FLOODS = {
    "none": "no other connection",
    "versions": "1 connection pipelining 10,000 `versions` at a time",
    "predict": "1 connection pipelining 10,000 predictions at a time",
    "no_read": "1 connection pipelining predictions, never reading",
}


def fairness(port, seconds):
    """One client's sequential predictions while another connection floods the server, for
    each kind of flood; returns table rows (kind, latencies, flooder's answers/s)."""
    ctx = mp.get_context("spawn")
    rows = []
    for kind in FLOODS:
        proc = None
        client = LearndClient.tcp("127.0.0.1", port, timeout=120)
        for _ in range(50):  # warm the connection before any flood
            client.predict(X)
        if kind != "none":
            barrier, results = ctx.Barrier(2), ctx.Queue()
            proc = ctx.Process(target=_flooder, args=(port, barrier, seconds + 0.5, kind, results))
            proc.start()
            barrier.wait()
            time.sleep(0.25)  # the flood under way
        lat = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # every request counts, the first ones too
            t = time.perf_counter()
            client.request({"op": "predict", "features": X})
            lat.append(time.perf_counter() - t)
        client.close()
        rate = 0.0
        if proc is not None:
            rate = results.get(timeout=120) / (seconds + 0.5)
            proc.join(30)
        rows.append((kind, lat, rate))
    return rows


def plain_server(args):
    """The anchor (bench/_plain_server.py) measured as learnd was idle, once learnd is stopped:
    (1-client latencies, then N clients' predictions/s and latencies, at depth 1)."""
    port = free_port()
    srv = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_plain_server.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        idle = sequential(port, n=5000)
        rate, many = concurrent(port, args.clients, args.seconds, 1)
        return idle, rate, many
    finally:
        srv.terminate()
        srv.wait(10)


def learned(port):
    h = info(port)
    return (h or {}).get("events_learned", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--paced", type=float, default=1000.0, help="paced client's requests/s")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument(
        "--depth", type=int, default=32, help="requests in flight per pipelining client"
    )
    ap.add_argument(
        "--fairness",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also measure one client's predictions while another connection floods the "
        "server, SECONDS per kind of flood (0: skip)",
    )
    add_set_option(ap)
    ap.add_argument(
        "--no-anchor",
        dest="anchor",
        action="store_false",
        help="skip the plain asyncio + numpy server measured after learnd (bench/_plain_server.py)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="learnd-serving-"))
    with EmbeddedBroker(log_path=tmp / "broker.log") as broker:
        topic = f"serving-{time.monotonic_ns()}"
        port = free_port()
        env = daemon_env(broker.bootstrap, topic, tmp / "state", port, **env_keys(args.set))
        ensure_topics(build_config(environ=env).kafka, partitions=2)  # the daemon's own topics
        t0 = time.monotonic()
        produce(broker.bootstrap, topic, DriftingSEA(seed=3).take(args.events), 2)
        print(f"filled {topic} with {args.events:,} events in {time.monotonic() - t0:.1f} s")
        proc = subprocess.Popen([LEARND, "run"], env=env)
        try:
            while not (info(port) or {}).get("version"):
                time.sleep(0.05)
            n0, t0 = learned(port), time.monotonic()
            while learned(port) < args.events * 0.3:
                time.sleep(0.25)
            n1, t1 = learned(port), time.monotonic()
            paced = sequential(
                port, until=lambda: learned(port) >= args.events * 0.6, pace=1 / args.paced
            )
            n2, t2 = learned(port), time.monotonic()
            busy = sequential(port, until=lambda: learned(port) >= args.events * 0.95)
            n3, t3 = learned(port), time.monotonic()
            while learned(port) < args.events:
                time.sleep(0.2)
            time.sleep(1.0)
            idle = sequential(port, n=5000)
            many_rate, many = concurrent(port, args.clients, args.seconds, 1)
            piped_rate, piped = concurrent(port, args.clients, args.seconds, args.depth)
            fair = fairness(port, args.fairness) if args.fairness else []
            with LearndClient.tcp("127.0.0.1", port) as c:
                form = c.info()["form"]
        finally:
            proc.terminate()
            proc.wait(30)
    plain = plain_server(args) if args.anchor else None
    print(
        f"\nlearnd run, default model (served form {form}), 1 torch thread; clients in "
        "separate processes over loopback TCP\n"
    )
    print("| phase | requests | p50 us | p99 us | max us | other |")
    print("|---|---|---|---|---|---|")
    print(
        f"| learning, no client | - | - | - | - | learner {(n1 - n0) / (t1 - t0):,.0f} events/s |"
    )
    print(
        f"| learning, 1 client at {args.paced:,.0f} req/s | {len(paced):,} | {pct(paced, 0.5):.0f} "
        f"| {pct(paced, 0.99):.0f} | {max(paced) * 1e6:.0f} | learner "
        f"{(n2 - n1) / (t2 - t1):,.0f} events/s meanwhile |"
    )
    print(
        f"| learning, 1 client flat out | {len(busy):,} | {pct(busy, 0.5):.0f} | "
        f"{pct(busy, 0.99):.0f} | {max(busy) * 1e6:.0f} | learner {(n3 - n2) / (t3 - t2):,.0f} "
        "events/s meanwhile |"
    )
    print(
        f"| idle, 1 client | {len(idle):,} | {pct(idle, 0.5):.0f} | {pct(idle, 0.99):.0f} "
        f"| {max(idle) * 1e6:.0f} | {len(idle) / sum(idle):,.0f} predictions/s |"
    )
    print(
        f"| idle, {args.clients} clients | {len(many):,} | {pct(many, 0.5):.0f} | "
        f"{pct(many, 0.99):.0f} | {max(many) * 1e6:.0f} | {many_rate:,.0f} predictions/s |"
    )
    print(
        f"| idle, {args.clients} clients pipelining {args.depth} | {len(piped) * args.depth:,} | "
        f"{pct(piped, 0.5):.0f} | {pct(piped, 0.99):.0f} | {max(piped) * 1e6:.0f} | "
        f"{piped_rate:,.0f} predictions/s (latency per batch of {args.depth}) |"
    )
    if plain is not None:
        p_idle, p_rate, p_many = plain
        print(
            f"| anchor: plain server, idle, 1 client | {len(p_idle):,} | {pct(p_idle, 0.5):.0f} | "
            f"{pct(p_idle, 0.99):.0f} | {max(p_idle) * 1e6:.0f} | "
            f"{len(p_idle) / sum(p_idle):,.0f} predictions/s |"
        )
        print(
            f"| anchor: plain server, idle, {args.clients} clients | {len(p_many):,} | "
            f"{pct(p_many, 0.5):.0f} | {pct(p_many, 0.99):.0f} | {max(p_many) * 1e6:.0f} | "
            f"{p_rate:,.0f} predictions/s (learnd: {many_rate / p_rate:.2f}x) |"
        )
    print(f"\nmean of busy latencies {statistics.mean(busy) * 1e6:.0f} us")
    if fair:
        print(
            f"\nFairness: one client's sequential predictions ({args.fairness:g} s each) while "
            "another connection floods the idle daemon\n"
        )
        print("| other connection | predictions | p50 us | p99 us | max us | its answers/s |")
        print("|---|---|---|---|---|---|")
        for kind, lat, rate in fair:
            print(
                f"| {FLOODS[kind]} | {len(lat):,} | {pct(lat, 0.5):.0f} | {pct(lat, 0.99):.0f} "
                f"| {max(lat) * 1e6:.0f} | {rate:,.0f} |"
            )


if __name__ == "__main__":
    main()
