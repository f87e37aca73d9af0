"""The label join through the daemon `learnd run` starts, with the embedded broker, in one run.

    nice -n 10 .venv/bin/python bench/join_live.py                       # the defaults below
    nice -n 10 .venv/bin/python bench/join_live.py --events 50000 --delay 5 --join-events 300000

Four measurements, each against its reference in the same run (on a shared 2-core machine only
the ratios travel):

1. *Live*: a client asks the socket for ``--rate`` predictions/s with ids (``predict_many`` of 50
   instances with ``ids``, so serving logs each to ``kafka.predictions_topic``) and sends each
   label to ``kafka.labels_topic`` after a delay uniform in 0-``--delay`` s; ``--missing`` of them
   never. It prints the share of the sent labels matched, ids learned twice
   (``checkpoint.audit_ids``) and the learner's accuracy over every example it learned, against
   the same events sent with their labels inline, in the order the labels arrived (the delay
   accounted for: the same examples learned in the same order) and in event order (no delay).
2. *Prediction log cost*: predict latency of single requests sampled during the live load, with
   the log on (requests with ids) and off (the same load without ids: nothing logged, the labels
   orphans), alternated twice, ``labels.mode = "join"`` in both.
3. *Join throughput from the two topics* (no socket): unlabelled events and their labels filled
   into the two topics, learned by the join, against the same events with inline labels.
4. *RSS* of the daemon and its consumer process over the join throughput run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from kafka import KafkaProducer  # noqa: E402

from bench.e2e import rss  # noqa: E402
from learnd.adapters.bootstrap import Daemon  # noqa: E402
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port  # noqa: E402
from learnd.adapters.kafka.topics import ensure_topics  # noqa: E402
from learnd.adapters.serving.client import LearndClient  # noqa: E402
from learnd.adapters.settings import build_config  # noqa: E402
from learnd.daemon.events.synthetic import DriftingSEA  # noqa: E402

BATCH = 50  # instances per predict_many of the live client


CLIENT = ["kafka-python"]  # kafka.client (--client)


def config(bootstrap, tag, tmp, mode, port=0, like_for_like=True):
    """``like_for_like``: batches of 32 throughout and no rehearsal, so that a run learning from
    a filled topic (behind the log) and a live one (keeping up) learn alike."""
    same = {"catch_up_lag": None, "replay": {"steps_per_batch": 0, "refill_steps_per_batch": 0}}
    same = same if like_for_like else {}
    return build_config(
        environ={},
        defaults={
            "schema": {"task": "binary", "features": ["x1", "x2", "x3"]},
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": f"{tag}-events",
                "labels_topic": f"{tag}-labels",
                "predictions_topic": f"{tag}-predictions",
                "dead_letter_topic": f"{tag}-dlq",
                "group_id": f"{tag}-{time.monotonic_ns()}",
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "max_poll_interval_ms": 10000,
                "client": CLIENT[0],
            },
            "labels": {"mode": mode, "ttl_s": 120, "max_pending": 2_000_000},
            "learning": same,
            "checkpoint": {"dir": str(tmp / f"ck-{tag}"), "every_s": 10, "audit_ids": True},
            "serving": {"tcp_port": port},
            "metrics": {"enabled": False},
        },
    )


class Accuracy:
    """Counts the learner's test-then-train hits over every example (wraps ``metrics.update``)."""

    def __init__(self, pipeline):
        self.n = self.hits = 0
        update = pipeline.metrics.update

        def counted(outputs, y):
            self.n += len(y)
            self.hits += int((outputs.argmax(axis=1) == np.asarray(y, np.int64)).sum())
            update(outputs, y)

        pipeline.metrics.update = counted

    @property
    def value(self) -> float:
        return self.hits / max(1, self.n)


def start(cfg):
    k = cfg.kafka
    for topic in (k.topic, k.labels_topic, k.predictions_topic):  # before any consumer subscribes
        ensure_topics(k.model_copy(update={"topic": topic}))
    d = Daemon(cfg)
    acc = Accuracy(d.pipeline)
    d.start()
    d.run_in_thread()
    return d, acc


def stop(d):
    d.stop()
    d.join(60)


def wait_learned(d, n, timeout_s):
    end = time.monotonic() + timeout_s
    while d.pipeline.learner.events_learned < n and time.monotonic() < end:
        time.sleep(0.05)


def sampler(port, stop_ev, out, with_id):
    """Single predict requests every 5 ms, their latencies into ``out`` (ids: "s-<k>")."""
    with LearndClient.tcp("127.0.0.1", port) as c:
        k = 0
        while not stop_ev.is_set():
            req = {"op": "predict", "features": [5.0, 4.0, 1.0]}
            if with_id:
                req["id"] = f"s-{k}"
                k += 1
            t = time.perf_counter()
            c.request(req)
            out.append(time.perf_counter() - t)
            time.sleep(0.005)


def live(bootstrap, tmp, tag, log, events, rate, delay, missing, seed=3):
    """The live client against a daemon with ``labels.mode = "join"``; with ``log`` false its
    requests carry no ids (nothing logged, every label an orphan); returns its numbers."""
    port = free_port()
    cfg = config(bootstrap, tag, tmp, "join", port)
    d, acc = start(cfg)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    rng = np.random.default_rng(seed)
    stop_ev, lat = threading.Event(), []
    due: list[tuple[float, int, int]] = []  # (when, id, label), sorted as sent
    sent = 0
    with LearndClient.tcp("127.0.0.1", port) as c:
        while not c.request({"op": "predict", "features": [1.0, 2.0, 3.0]}, check=False)["ok"]:
            time.sleep(0.05)  # serving has its first model
        samp = threading.Thread(target=sampler, args=(port, stop_ev, lat, log))
        samp.start()
        t0 = time.monotonic()
        stream = iter(DriftingSEA(seed=seed))
        for start_i in range(0, events, BATCH):
            batch = [next(stream) for _ in range(min(BATCH, events - start_i))]
            wait = t0 + start_i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            ids = [start_i + k for k in range(len(batch))]
            req = {"op": "predict_many", "instances": [e["features"] for e in batch]}
            if log:
                req["ids"] = ids
            c.request(req)
            now = time.monotonic()
            for i, e in zip(ids, batch, strict=True):
                if rng.random() >= missing:
                    due.append((now + rng.uniform(0, delay), i, e["label"]))
            due.sort()
            while due and due[0][0] <= now:
                _, i, y = due.pop(0)
                producer.send(cfg.kafka.labels_topic, orjson.dumps({"id": i, "label": y}))
                sent += 1
        offered = events / (time.monotonic() - t0)
    while due:  # the labels still to come
        wait = due[0][0] - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.01))
            continue
        _, i, y = due.pop(0)
        producer.send(cfg.kafka.labels_topic, orjson.dumps({"id": i, "label": y}))
        sent += 1
    producer.flush(60)
    stop_ev.set()
    samp.join()
    wait_learned(d, sent, 60)
    join = d.pipeline.join
    matched = join.joiner.outcomes["matched"] if join is not None else 0
    audit = d.pipeline.audit
    stop(d)
    producer.close()
    lat.sort()
    return {
        "offered": offered,
        "sent": sent,
        "matched": matched,
        "twice": int((audit > 1).sum()) if audit is not None else -1,
        "learned": acc.n,
        "accuracy": acc.value,
        "p50_us": statistics.median(lat) * 1e6,
        "p99_us": lat[int(0.99 * (len(lat) - 1))] * 1e6,
        "samples": len(lat),
        "cfg": cfg,
        "order": None,
    }


def inline_same_order(bootstrap, tmp, tag, events, rate, delay, missing, seed=3, delayed=True):
    """The live run's labelled examples, with inline labels, in label-arrival order (or in event
    order); the learner's accuracy over them."""
    rng = np.random.default_rng(seed)
    evs = list(DriftingSEA(seed=seed).take(events))
    arrivals = []  # label arrival times: the live run's draws, replayed with its generator
    for start_i in range(0, events, BATCH):
        for i in range(start_i, min(start_i + BATCH, events)):
            if rng.random() >= missing:
                arrivals.append((start_i / rate + rng.uniform(0, delay), i))
    if delayed:
        arrivals.sort()
    cfg = config(bootstrap, tag, tmp, "inline")
    fill(bootstrap, cfg.kafka.topic, [orjson.dumps(evs[i]) for _, i in arrivals])
    d, acc = start(cfg)
    wait_learned(d, len(arrivals), 120)
    stop(d)
    return acc.value, acc.n


def fill(bootstrap, topic, values):
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for v in values:
        p.send(topic, v)
    p.flush(120)
    p.close()


def topics_run(bootstrap, tmp, tag, events, mode, delay_events, seed=5):
    """Events (unlabelled, and their labels on the label topic delayed by up to
    ``delay_events`` positions; or inline) pre-filled, then learned; events/s and RSS."""
    cfg = config(bootstrap, tag, tmp, mode, like_for_like=False)
    evs = DriftingSEA(seed=seed).take(events)
    if mode == "inline":
        fill(bootstrap, cfg.kafka.topic, (orjson.dumps(e) for e in evs))
    else:
        rng = np.random.default_rng(seed)
        rows, labels = [], []
        for e in evs:
            rows.append(orjson.dumps({"id": e["id"], "features": e["features"]}))
            labels.append((e["id"] + rng.uniform(0, delay_events), e["id"], e["label"]))
        labels.sort()
        fill(bootstrap, cfg.kafka.topic, rows)
        fill(
            bootstrap,
            cfg.kafka.labels_topic,
            (orjson.dumps({"id": i, "label": y}) for _, i, y in labels),
        )
    rss0 = rss()
    d, _ = start(cfg)
    while d.pipeline.learner.events_learned == 0:
        time.sleep(0.001)
    t0, n0 = time.perf_counter(), d.pipeline.learner.events_learned
    samples = []
    marks = [int(events * f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    while marks:
        learned = d.pipeline.learner.events_learned
        if learned >= marks[0]:
            src = d.source
            pid = getattr(src, "pid", None) or getattr(getattr(src, "events", None), "pid", None)
            samples.append((marks.pop(0), rss(), rss(pid) if pid else 0))
        time.sleep(0.02)
    dt = time.perf_counter() - t0
    audit = d.pipeline.audit
    twice = int((audit > 1).sum()) if audit is not None else -1
    stop(d)
    return {"rate": (events - n0) / dt, "rss0": rss0, "rss": samples, "twice": twice}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=50_000, help="live predictions")
    ap.add_argument("--rate", type=float, default=5000.0, help="live predictions per second")
    ap.add_argument("--delay", type=float, default=5.0, help="labels delayed U(0, delay) s")
    ap.add_argument("--missing", type=float, default=0.01, help="share of labels never sent")
    ap.add_argument("--join-events", type=int, default=300_000, help="events of measurement 3")
    ap.add_argument("--no-topics", action="store_true", help="measurements 1 and 2 only")
    ap.add_argument("--topics-only", action="store_true", help="measurements 3 and 4 only")
    ap.add_argument(
        "--repeat", type=int, default=1, help="measurement 3 this many times (inline, join each)"
    )
    ap.add_argument("--client", default="kafka-python", help="kafka.client of every daemon")
    args = ap.parse_args()
    CLIENT[0] = args.client
    tmp = Path(tempfile.mkdtemp(prefix="learnd-join-bench-"))
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    try:
        if not args.topics_only:
            live_runs(broker.bootstrap, tmp, args)
        if not args.no_topics:
            topics_runs(broker.bootstrap, tmp, args)
    finally:
        broker.stop()


def live_runs(bootstrap, tmp, args):
    """Measurements 1 and 2."""
    n = args.events
    runs = {}
    for k, log in enumerate((True, False, True, False)):
        mode = "on" if log else "off"
        runs.setdefault(mode, []).append(
            live(bootstrap, tmp, f"live{k}", log, n, args.rate, args.delay, args.missing)
        )
        print(f"live run {k + 1}/4 (prediction log {mode}) done", flush=True)
    acc_delayed, n_delayed = inline_same_order(
        bootstrap, tmp, "inl-d", n, args.rate, args.delay, args.missing
    )
    acc_plain, _ = inline_same_order(
        bootstrap, tmp, "inl-p", n, args.rate, args.delay, args.missing, delayed=False
    )
    j = runs["on"][0]
    print(
        f"\n1. live: {n:,} predictions with ids offered at {args.rate:,.0f}/s "
        f"(achieved {j['offered']:,.0f}/s), labels delayed U(0, {args.delay:g}) s, "
        f"{args.missing:.0%} never sent\n"
    )
    print("| run | labels sent | matched / sent | learned twice | learned | accuracy |")
    print("|---|---|---|---|---|---|")
    for k, r in enumerate(runs["on"]):
        print(
            f"| join, live {k + 1} | {r['sent']:,} | {r['matched'] / max(1, r['sent']):.4%} "
            f"| {r['twice']} | {r['learned']:,} | {r['accuracy']:.4f} |"
        )
    print(f"| inline, label-arrival order | - | - | - | {n_delayed:,} | {acc_delayed:.4f} |")
    print(f"| inline, event order (no delay) | - | - | - | {n_delayed:,} | {acc_plain:.4f} |")
    print("\n2. predict latency of single requests during the live load\n")
    print("| prediction log | achieved predictions/s | samples | p50 us | p99 us |")
    print("|---|---|---|---|---|")
    for mode in ("on", "off"):
        for r in runs[mode]:
            print(
                f"| {mode} | {r['offered']:,.0f} | {r['samples']:,} | {r['p50_us']:.0f} "
                f"| {r['p99_us']:.0f} |"
            )
    p99 = {m: statistics.median(r["p99_us"] for r in runs[m]) for m in runs}
    print(f"\np99 with the log / without (median of runs): {p99['on'] / p99['off']:.2f}")


def topics_runs(bootstrap, tmp, args):
    """Measurements 3 and 4 (inline, then join, ``--repeat`` times)."""
    m = args.join_events
    pairs = []
    for k in range(args.repeat):
        inline = topics_run(bootstrap, tmp, f"thr-inline{k}", m, "inline", 0)
        joined = topics_run(bootstrap, tmp, f"thr-join{k}", m, "join", 25_000)
        pairs.append((inline, joined))
    print(
        f"\n3. from the topics, {m:,} events (join: labels up to 25,000 records behind "
        "their features)\n"
    )
    print("| labels | events/s | learned twice |")
    print("|---|---|---|")
    for inline, joined in pairs:
        print(f"| inline | {inline['rate']:,.0f} | {inline['twice']} |")
        print(f"| join (two topics) | {joined['rate']:,.0f} | {joined['twice']} |")
    ratios = ", ".join(f"{j['rate'] / i['rate']:.0%}" for i, j in pairs)
    print(f"\njoin / inline: {ratios}")
    print("\n4. RSS over the join run (MiB)\n")
    print("| joined | daemon | consumer process |")
    print("|---|---|---|")
    print(f"| before start | {joined['rss0'] / 2**20:.0f} | - |")
    for mark, r, c in joined["rss"]:
        print(f"| {mark:,} | {r / 2**20:.0f} | {c / 2**20:.0f} |")


if __name__ == "__main__":
    main()
