"""Driving a real ``learnd run`` from the soaks: its environment, a producer, its health answer,
and what /proc says about it and its children."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

from learnd.adapters.serving.client import LearndClient

LEARND = str(Path(sys.executable).parent / "learnd")


def daemon_env(bootstrap, topic, state, port, metrics_port=None, **extra):
    env = {
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LEARND_KAFKA__TOPIC": topic,
        "LEARND_KAFKA__DEAD_LETTER_TOPIC": f"{topic}-dlq",
        "LEARND_KAFKA__GROUP_ID": topic,
        "LEARND_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "LEARND_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "LEARND_KAFKA__MAX_POLL_INTERVAL_MS": "10000",
        "LEARND_SCHEMA__FEATURES": '["x1", "x2", "x3"]',
        "LEARND_CHECKPOINT__DIR": str(state),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_LOG__LEVEL": "WARNING",
    }
    if metrics_port is None:
        env["LEARND_METRICS__ENABLED"] = "false"
    else:
        env["LEARND_METRICS__PORT"] = str(metrics_port)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def add_set_option(ap) -> None:
    """A bench's ``--set KEY=VALUE`` (repeatable): config keys for the daemon it starts."""
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config key for the daemon, e.g. serving.processes=2 (repeatable)",
    )


def env_keys(pairs):
    """``section.key=value`` pairs (a bench's ``--set``) as ``LEARND_SECTION__KEY`` variables."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out["LEARND_" + key.replace(".", "__").upper()] = value
    return out


def produce(bootstrap, topic, events, partitions, start_id=0, rate=None):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    t0 = time.monotonic()
    for i, e in enumerate(events):
        p.send(
            topic, orjson.dumps({**e, "id": start_id + i}), partition=(start_id + i) % partitions
        )
        if rate and (ahead := (i + 1) / rate - (time.monotonic() - t0)) > 0.005:
            time.sleep(ahead)
    p.flush(60)
    p.close()


def info(port):
    """The daemon's health answer (``events_learned``: what the learner holds), or None."""
    try:
        with LearndClient.tcp("127.0.0.1", port, timeout=2) as c:
            return c.health()
    except OSError:
        return None


def proc_stats(pid):
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def consumer_child(pid):
    """The daemon's consumer process (kafka.consumer_process), or None."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"learnd.adapters.kafka.consumer_process" in cmdline:
                return int(child)
    return None


def learnd_pid(parent: int) -> int:
    """The learnd process under ``unshare ... sh -c`` (signal it, not the shell)."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"learnd" in cmd and b"run" in cmd:
            return int(child)
        return learnd_pid(int(child))
    raise RuntimeError("learnd process not found")
