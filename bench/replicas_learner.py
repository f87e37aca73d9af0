"""What writing the models topic costs the learner: events/s end to end with
``kafka.models_topic`` off and on, alternated, on the same filled topic.

    nice -n 10 .venv/bin/python bench/replicas_learner.py [--events 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.settings import build_config
from learnd.daemon.events.synthetic import DriftingSEA


def config(bootstrap: str, tmp: Path, models_topic: str | None, publish_every_s: float):
    return build_config(
        environ={},
        defaults={
            "schema": {"task": "binary", "features": ["x1", "x2", "x3"]},
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": "bench-events",
                "dead_letter_topic": "bench-dlq",
                "models_topic": models_topic,
                "group_id": f"bench-{time.monotonic_ns()}",
            },
            "learning": {"publish_every_s": publish_every_s},
            "checkpoint": {"dir": str(tmp / f"ck-{time.monotonic_ns()}"), "every_s": 10},
            "serving": {"tcp_port": free_port()},
            "metrics": {"enabled": False},
        },
    )


def run(cfg, n: int) -> tuple[float, int, int]:
    """(events/s learned, snapshots written, dropped) for ``n`` events."""
    d = Daemon(cfg)
    d.start()
    d.run_in_thread()
    while d.pipeline.learner.events_learned == 0:
        time.sleep(0.001)
    t0, n0 = time.perf_counter(), d.pipeline.learner.events_learned
    while d.pipeline.learner.events_learned < n:
        time.sleep(0.01)
    rate = (n - n0) / (time.perf_counter() - t0)
    d.stop()
    d.join(60)
    models = d.models
    return rate, models.sent if models else 0, models.dropped if models else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--publish-every-s", type=float, default=0.05)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        cfg = config(broker.bootstrap, tmp, None, args.publish_every_s)
        ensure_topics(cfg.kafka, partitions=1)
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
        for e in DriftingSEA(seed=7).take(args.events):
            p.send("bench-events", orjson.dumps(e), partition=0)
        p.flush(120)
        p.close()
        rates: dict[str, list[float]] = {"off": [], "on": []}
        written = dropped = 0
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                topic = f"bench-models-{time.monotonic_ns()}" if mode == "on" else None
                rate, sent, drop = run(
                    config(broker.bootstrap, tmp, topic, args.publish_every_s), args.events
                )
                rates[mode].append(rate)
                written, dropped = written + sent, dropped + drop
    print(
        f"{args.events} events, learning.publish_every_s {args.publish_every_s}, "
        f"{args.repeat} runs each, alternated"
    )
    print("| kafka.models_topic | events/s, median (min-max) |")
    print("|---|---|")
    for mode, values in rates.items():
        print(
            f"| {mode} | {statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f}) |"
        )
    print(f"snapshots written with it on: {written}, dropped for a newer one: {dropped}")


if __name__ == "__main__":
    main()
