"""`learnd demo`: embedded broker + a drifting synthetic stream + the daemon, with live progress."""

from __future__ import annotations

import logging
import random
import tempfile
import threading
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.cli import demo_state
from learnd.adapters.cli.demo_labels import DelayedLabels
from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.settings import build_config
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA

log = logging.getLogger("learnd.demo")

DEMO_DEFAULTS = {
    "schema": {"task": "binary", "features": list(FEATURES)},
    "kafka": {
        "topic": "learnd.demo.events",
        "dead_letter_topic": "learnd.demo.dead-letter",
        "group_id": "learnd-demo",
        # tansu completes a group join in ~3 s with these instead of ~20 s.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_interval_ms": 10000,
    },
    "checkpoint": {"every_s": 10},
}

BAD_RECORDS = (
    b"this is not json",
    b'{"features": {"x1": 1, "x2": 2}, "label": 1}',
    b'{"features": {"x1": 1, "x2": 2, "x3": "three"}, "label": 1}',
    b'{"features": {"x1": 1, "x2": 2, "x3": 3}, "label": 7}',
    b'{"features": [1, 2, 3], "label": 1}',
)


class Producer(threading.Thread):
    """Produces the drifting stream at ``rate`` events/s, with an occasional bad record."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        rate: float,
        switch_every: int,
        bad_rate: float,
        partitions: int,
        seed: int = 42,
    ):
        super().__init__(name="learnd-demo-producer", daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
        self.topic = topic
        self.rate = rate
        self.stream = DriftingSEA(seed=seed, switch_every=switch_every)
        self.bad_rate = bad_rate
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.sent = 0
        self.concept = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        for event in self.stream:
            if self.stop_event.is_set():
                break
            self.concept = event.pop("concept")
            value = orjson.dumps(event)
            if self.rng.random() < self.bad_rate:
                value = self.rng.choice(BAD_RECORDS)
            self.producer.send(self.topic, value=value, partition=self.sent % self.partitions)
            self.sent += 1
            ahead = self.sent / self.rate - (time.monotonic() - start)
            if ahead > 0.005:
                time.sleep(ahead)
        self.producer.flush(10)
        self.producer.close(5)


def _pick_port(wanted: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            return free_port()


def run_demo(
    rate: float,
    duration: float | None,
    switch_every: int,
    partitions: int,
    bad_rate: float,
    every: float,
    overrides: list[str],
    state_dir: str | None,
    out=print,
    label_delay: float | None = None,
) -> int:
    before = demo_state.earlier() if state_dir is None else None
    workdir = Path(state_dir or tempfile.mkdtemp(prefix=demo_state.PREFIX))
    demo_state.claim(workdir)
    resuming = demo_state.has_checkpoints(workdir)
    try:
        broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    except BaseException:
        demo_state.release(workdir)
        raise
    defaults = {
        **DEMO_DEFAULTS,
        "kafka": {**DEMO_DEFAULTS["kafka"], "bootstrap_servers": broker.bootstrap},
        "checkpoint": {**DEMO_DEFAULTS["checkpoint"], "dir": str(workdir / "checkpoints")},
        "serving": {"tcp_port": _pick_port(7070), "unix_path": str(workdir / "learnd.sock")},
        "metrics": {"port": _pick_port(9464)},
    }
    if label_delay is not None:  # predictions now, labels later on their own topic
        defaults["labels"] = {"mode": "join"}
        defaults["kafka"] |= {
            "labels_topic": "learnd.demo.labels",
            "predictions_topic": "learnd.demo.predictions",
        }
    try:
        cfg = build_config(environ={}, overrides=overrides, defaults=defaults)
        ensure_topics(cfg.kafka, partitions=partitions)
        daemon = Daemon(cfg)
        daemon.start()
        host, port = daemon.server.tcp_address
        producer: Producer | DelayedLabels
        if label_delay is None:
            producer = Producer(
                broker.bootstrap, cfg.kafka.topic, rate, switch_every, bad_rate, partitions
            )
        else:
            k = cfg.kafka
            for topic in (k.labels_topic, k.predictions_topic):
                ensure_topics(k.model_copy(update={"topic": topic}), partitions=partitions)
            producer = DelayedLabels(
                broker.bootstrap, k.labels_topic, (host, port), rate, label_delay, switch_every
            )
        out(f"learnd demo: broker {broker.bootstrap}, state in {workdir}")
        if before is not None:
            how = "was killed" if before[1] else "stopped"
            out(
                f"  an earlier demo {how}; its state is in {before[0]}: resume it with "
                f"`learnd demo --state-dir {before[0]}` (this one starts afresh)"
            )
        if resuming:
            out(
                f"  resuming the model checkpointed in {workdir} (the embedded broker keeps no "
                "data between runs: the stream starts anew)"
            )
        out(f'  predictions: learnd predict --tcp {host}:{port} \'{{"x1": 6, "x2": 3, "x3": 1}}\'')
        out(f"               (or the Unix socket {daemon.server.unix_path})")
        if daemon.metrics_server:
            mh, mp = daemon.metrics_server.address
            out(f"  metrics:     http://{mh}:{mp}/metrics")
        out(
            f"  stream:      SEA, {rate:g} events/s, concept switch every {switch_every} events, "
            f"{partitions} partitions; Ctrl-C stops"
        )
        if label_delay is not None:
            out(
                f"  labels:      a client asks for each prediction (with its id); the label "
                f"follows {label_delay:g} s later on {cfg.kafka.labels_topic}"
            )
        producer.start()
        daemon.run_in_thread()
        _progress(daemon, producer, host, port, duration, every, out)
    except KeyboardInterrupt:
        out("stopping ...")
    finally:
        if "producer" in locals():
            producer.stop_event.set()
            producer.join(15)
        if "daemon" in locals():
            daemon.stop()
            daemon.join(30)
        broker.stop()
        demo_state.release(workdir)
    out(f"learnd demo stopped cleanly; `learnd demo --state-dir {workdir}` resumes it")
    return 0


def _progress(
    daemon: Daemon,
    producer: Producer,
    host: str,
    port: int,
    duration: float | None,
    every: float,
    out,
) -> None:
    p = daemon.pipeline
    t0 = time.monotonic()
    last_t, last_n, alarms_seen = t0, 0, 0
    with LearndClient.tcp(host, port) as client:
        while duration is None or time.monotonic() - t0 < duration:
            # Sample the rolling accuracy between lines, so a dip after a concept switch shows
            # even when the model recovers before the next line.
            low = float("nan")
            until = time.monotonic() + every
            while time.monotonic() < until:
                time.sleep(0.05)
                acc_now = p.metrics.accuracy
                if acc_now == acc_now and not low <= acc_now:  # skip NaN; keep the minimum
                    low = acc_now
            now = time.monotonic()
            n = p.learner.events_learned
            rate = (n - last_n) / (now - last_t)
            last_t, last_n = now, n
            ans = client.predict({"x1": 6.0, "x2": 2.5, "x3": 1.0})
            lag = sum(daemon.source.lag().values())
            acc = p.metrics.accuracy
            out(
                f"t={now - t0:6.1f}s learned={n:>8,} ({rate:>7,.0f}/s) rolling_acc="
                f"{acc:.3f} (low {'-' if low != low else f'{low:.3f}'}) concept={producer.concept} version={ans['version']:>4} "
                f"drift_alarms={p.drift.alarms} dead_letters={sum(p.rejected.values())} lag={lag} "
                f"rehearsal={p.replay_steps()}/batch "
                f"| predict(6,2.5,1)={ans['prediction']} p1={ans['scores']['1']:.2f}" + _joined(p)
            )
            if p.drift.alarms > alarms_seen:
                out(
                    f"  ! drift alarm at event {p.drift.last_alarm_at:,}: learning rate boosted "
                    f"to {p.learner.lr:.4f}"
                )
                alarms_seen = p.drift.alarms


def _joined(p) -> str:
    """The label join's progress, with ``--label-delay``."""
    if p.join is None:
        return ""
    served = p.join.served.summary()
    newest = served[max(served)]["accuracy"] if served else float("nan")
    return (
        f" | joined={p.join.joiner.outcomes['matched']:,} pending={p.join.joiner.pending:,} "
        f"served_acc(joined)={newest:.3f}"
    )
