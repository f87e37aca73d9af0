"""End-to-end speed: from a Kafka topic to a served prediction, measured in one run.

    .venv/bin/python bench/e2e.py                 # 200k events; the full table
    .venv/bin/python bench/e2e.py --events 50000  # quicker

Fills a topic (embedded tansu) with the drifting SEA stream, then prints side by side: the raw
kafka-python consume rate (no decoding), consume + decode, and learnd end to end (consume,
validate, learn, gate, checkpoint, commit) with prediction latency sampled during the run, RSS at
start and end, checkpoint time, and how throughput changes with model size, batch size and
partitions. Last, the time from `learnd run` starting to its first served prediction.

On two cores the broker, the daemon, its consumer and serving processes and kafka-python's IO
thread share the CPU, and single runs of the same configuration were seen to differ by 25%. The consume rates and
learnd's main end-to-end runs are therefore repeated (``--repeat``, default 5) and reported as
median (min-max); the targets (100k events/s, and 75% of kafka-python's consume + decode) are
checked against the medians.
learnd's runs learn the backlog as fast as they can (``learning.catch_up_s`` 1: the largest
catch-up batches at once); one row runs the default pace (30 s, which spends a small backlog's
time on smaller batches and rehearsal instead, docs/operations.md "Catching up").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from learnd.adapters.bootstrap import Daemon  # noqa: E402
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from learnd.adapters.kafka.topics import ensure_topics  # noqa: E402
from learnd.adapters.serving.client import LearndClient  # noqa: E402
from learnd.adapters.settings import build_config  # noqa: E402
from learnd.daemon.events.decoder import EventDecoder  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402
from learnd.daemon.learning.model import build_model, count_parameters  # noqa: E402

HIDDEN = {"10k": (96, 96), "100k": (310, 310), "1M": (1000, 1000)}


def rss(pid="self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fill(bootstrap, topic, n, partitions):
    cfg = build_config(
        environ={},
        defaults={
            "schema": {"n_features": 3},
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "dead_letter_topic": topic + "-dlq",
            },
        },
    )
    ensure_topics(cfg.kafka, partitions=partitions)
    p = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, compression_type=None
    )
    for i, e in enumerate(DriftingSEA(seed=7, switch_every=50_000).take(n)):
        p.send(topic, orjson.dumps(e), partition=i % partitions)
    p.flush(120)
    p.close()


def raw_consume(bootstrap, topic, n, partitions, decode=False):
    decoder = EventDecoder(
        build_config(environ={}, defaults={"schema": {"features": ["x1", "x2", "x3"]}}).schema_
    )
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=2000,
        fetch_max_bytes=50 * 2**20,
        max_partition_fetch_bytes=10 * 2**20,
    )
    c.assign([TopicPartition(topic, p) for p in range(partitions)])
    c.seek_to_beginning()
    got, t0 = 0, time.perf_counter()
    while got < n:
        for recs in c.poll(500).values():
            got += len(recs)
            if decode:
                decoder.decode_many(recs)  # ConsumerRecords, as the daemon hands them over
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def raw_consume_confluent(bootstrap, topic, n, partitions, decode=False):
    """The same with confluent-kafka (librdkafka parses records in C); None if not installed."""
    try:
        from confluent_kafka import Consumer
        from confluent_kafka import TopicPartition as CTP
    except ImportError:
        return None
    from learnd.daemon.events.record import Record

    decoder = EventDecoder(
        build_config(environ={}, defaults={"schema": {"features": ["x1", "x2", "x3"]}}).schema_
    )
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "max.partition.fetch.bytes": 10 * 2**20,
            "fetch.max.bytes": 50 * 2**20,
        }
    )
    c.assign([CTP(topic, p, 0) for p in range(partitions)])
    got, t0 = 0, time.perf_counter()
    while got < n:
        msgs = c.consume(2000, 0.5)
        got += len(msgs)
        if decode and msgs:
            decoder.decode_many(
                [Record(topic, m.partition(), m.offset(), m.value(), m.key()) for m in msgs]
            )
    dt = time.perf_counter() - t0
    c.close()
    return n / dt


def learnd_run(
    bootstrap,
    topic,
    n,
    tmp,
    hidden=(64, 64),
    batch=32,
    tag="",
    catch_up=True,
    catch_up_s=1.0,
    client=None,
    consumer_process=True,
):
    port = free_port()
    cfg = build_config(
        environ={},
        defaults={
            "schema": {"task": "binary", "features": ["x1", "x2", "x3"]},
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "dead_letter_topic": topic + "-dlq",
                "group_id": f"bench-{tag}-{time.monotonic_ns()}",
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "max_poll_interval_ms": 10000,
                **({"client": client} if client else {}),
                "consumer_process": consumer_process,
            },
            "model": {"hidden": list(hidden)},
            "learning": {
                "batch_size": batch,
                "catch_up_batch_size": max(batch, 256),
                "catch_up_s": catch_up_s,
                **({} if catch_up else {"catch_up_lag": None}),
            },
            "checkpoint": {"dir": str(tmp / f"ck-{tag}-{time.monotonic_ns()}"), "every_s": 10},
            "serving": {"tcp_port": port},
            "metrics": {"enabled": False},
        },
    )
    d = Daemon(cfg)
    saves = []
    save = d.store.save

    def timed_save(state):
        t = time.perf_counter()
        out = save(state)
        saves.append(time.perf_counter() - t)
        return out

    d.store.save = timed_save
    rss0 = rss()
    d.start()
    latencies, stop = [], threading.Event()

    def sample():
        with LearndClient.tcp("127.0.0.1", port) as c:
            while not stop.is_set():
                t = time.perf_counter()
                c.predict([5.0, 4.0, 1.0])
                latencies.append(time.perf_counter() - t)
                time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    d.run_in_thread()
    while d.pipeline.learner.events_learned == 0:
        time.sleep(0.001)
    t0, n0 = time.perf_counter(), d.pipeline.learner.events_learned
    while d.pipeline.learner.events_learned < n:
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    rate = (n - n0) / dt
    child = getattr(d.source, "pid", None)
    child_rss = rss(child) if child else 0
    stop.set()
    sampler.join()
    d.stop()
    d.join(60)
    rss1 = rss()
    lat = sorted(latencies)
    return {
        "rate": rate,
        "p50_us": statistics.median(lat) * 1e6 if lat else float("nan"),
        "p99_us": lat[int(0.99 * (len(lat) - 1))] * 1e6 if lat else float("nan"),
        "rss0": rss0,
        "rss1": rss1,
        "child_rss": child_rss,
        "ckpt_ms": 1000 * statistics.median(saves) if saves else float("nan"),
        "params": count_parameters(build_model(cfg.model, 3, 1)),
    }


def first_prediction(bootstrap, topic, tmp):
    port = free_port()
    env = {
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LEARND_KAFKA__TOPIC": topic,
        "LEARND_KAFKA__DEAD_LETTER_TOPIC": topic + "-dlq",
        "LEARND_KAFKA__GROUP_ID": f"first-{time.monotonic_ns()}",
        "LEARND_SCHEMA__FEATURES": '["x1","x2","x3"]',
        "LEARND_CHECKPOINT__DIR": str(tmp / "first"),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_METRICS__ENABLED": "false",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "learnd"), "run"], env=env, stderr=subprocess.DEVNULL
    )
    while True:
        try:
            with LearndClient.tcp("127.0.0.1", port, timeout=1) as c:
                if c.predict([1.0, 2.0, 3.0])["ok"]:
                    break
        except OSError:
            time.sleep(0.02)
    dt = time.perf_counter() - t0
    proc.terminate()
    proc.wait(60)
    return dt


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):>12,.0f}   ({min(values):,.0f}-{max(values):,.0f})"


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument(
        "--quick", action="store_true", help="skip the model-size / batch / partition sweep"
    )
    ap.add_argument("--repeat", type=int, default=5, help="runs of the main measurements")
    args = ap.parse_args()
    n = args.events
    tmp = Path(tempfile.mkdtemp(prefix="learnd-bench-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    try:
        t = time.perf_counter()
        fill(broker.bootstrap, "bench1", n, 1)
        print(
            f"filled 1 partition with {n:,} events in {time.perf_counter() - t:.1f} s", flush=True
        )
        k = args.repeat
        raw = [raw_consume(broker.bootstrap, "bench1", n, 1) for _ in range(k)]
        dec = [raw_consume(broker.bootstrap, "bench1", n, 1, decode=True) for _ in range(k)]
        runs = [learnd_run(broker.bootstrap, "bench1", n, tmp, tag=f"base{i}") for i in range(k)]
        base = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]  # the median run
        rates = [r["rate"] for r in runs]
        steady = learnd_run(broker.bootstrap, "bench1", n, tmp, tag="steady", catch_up=False)
        paced = learnd_run(broker.bootstrap, "bench1", n, tmp, tag="paced", catch_up_s=30.0)
        inline = [
            learnd_run(broker.bootstrap, "bench1", n, tmp, tag=f"inline{i}", consumer_process=False)
            for i in range(k)
        ]
        c_raw = raw_consume_confluent(broker.bootstrap, "bench1", n, 1)
        print(f"\n{'path (1 partition)':<44}{'events/s':>12}   (median, min-max of {k})")
        print(f"{'kafka-python consume, no decoding':<44}{_spread(raw)}")
        print(f"{'kafka-python consume + decode/validate':<44}{_spread(dec)}")
        ceiling = statistics.median(dec)
        print(
            f"{'learnd end to end (catch_up_s 1)':<44}{_spread(rates)}"
            f"   = {100 * statistics.median(rates) / ceiling:.0f}% of consume+decode"
        )
        print(
            f"{'  ... batches of 32 throughout':<44}{steady['rate']:>12,.0f}"
            f"   = {100 * steady['rate'] / ceiling:.0f}% (learning.catch_up_lag null; one run)"
        )
        print(
            f"{'  ... the default catch-up pace':<44}{paced['rate']:>12,.0f}"
            f"   = {100 * paced['rate'] / ceiling:.0f}% (learning.catch_up_s 30: smaller batches"
            " and rehearsal while that pace allows; one run)"
        )
        inline_rates = [r["rate"] for r in inline]
        print(
            f"{'  ... consumer in the learning thread':<44}{_spread(inline_rates)}"
            f"   = {100 * statistics.median(inline_rates) / ceiling:.0f}% (kafka.consumer_process"
            " false)"
        )
        best = statistics.median(rates)
        if c_raw is None:
            print("confluent-kafka: not installed (pip install 'learnd[confluent]')")
        else:
            c_dec = raw_consume_confluent(broker.bootstrap, "bench1", n, 1, decode=True)
            c_rates = [
                learnd_run(broker.bootstrap, "bench1", n, tmp, tag=f"conf{i}", client="confluent")[
                    "rate"
                ]
                for i in range(k)
            ]
            print(f"{'confluent-kafka consume, no decoding':<44}{c_raw:>12,.0f}")
            print(f"{'confluent-kafka consume + decode/validate':<44}{c_dec:>12,.0f}")
            print(
                f"{'learnd end to end, kafka.client confluent':<44}{_spread(c_rates)}"
                f"   = {100 * statistics.median(c_rates) / ceiling:.0f}% of kafka-python's"
                " consume+decode"
            )
            best = max(best, statistics.median(c_rates))
        default = statistics.median(rates)
        for name, rate in (("kafka-python (default)", default), ("best client", best)):
            print(
                f"{'targets, ' + name + ':':<38} >= 100,000 events/s: {rate:,.0f} "
                f"({'met' if rate >= 100_000 else 'not met'}); >= 75% of kafka-python "
                f"consume+decode ({ceiling:,.0f}): {100 * rate / ceiling:.0f}% "
                f"({'met' if rate >= 0.75 * ceiling else 'not met'})"
            )
        print(
            f"\nserving while learning at full speed: p50 {base['p50_us']:.0f} us, "
            f"p99 {base['p99_us']:.0f} us; RSS {base['rss0'] / 2**20:.0f} -> "
            f"{base['rss1'] / 2**20:.0f} MiB (consumer process {base['child_rss'] / 2**20:.0f} MiB);"
            f" checkpoint {base['ckpt_ms']:.1f} ms"
        )
        if not args.quick:
            print(
                f"\n{'model':<8}{'params':>10}{'batch':>7}{'events/s':>12}{'p99 us':>9}{'ckpt ms':>9}"
            )
            rows = [
                ("64x64", (64, 64), 32),
                *((k, h, 32) for k, h in HIDDEN.items()),
                ("64x64", (64, 64), 256),
                ("1M", HIDDEN["1M"], 256),
            ]
            for name, hidden, batch in rows:
                r = learnd_run(
                    broker.bootstrap, "bench1", n, tmp, hidden, batch, tag=f"{name}-{batch}"
                )
                print(
                    f"{name:<8}{r['params']:>10,}{batch:>7}{r['rate']:>12,.0f}{r['p99_us']:>9.0f}"
                    f"{r['ckpt_ms']:>9.1f}",
                    flush=True,
                )
            fill(broker.bootstrap, "bench4", n, 4)
            r4 = learnd_run(broker.bootstrap, "bench4", n, tmp, tag="p4")
            raw4 = raw_consume(broker.bootstrap, "bench4", n, 4)
            print(
                f"\n4 partitions: raw consume {raw4:,.0f}/s, learnd end to end {r4['rate']:,.0f}/s"
            )
        print(
            f"\ntime from `learnd run` to its first served prediction: "
            f"{first_prediction(broker.bootstrap, 'bench1', tmp):.2f} s"
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
