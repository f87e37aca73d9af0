"""`learnd` as a user runs it: a subprocess with a config file, queried with `learnd predict`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.segments import segment_prefix, segment_scope
from learnd.adapters.settings import build_config
from learnd.daemon.config import CheckpointConfig
from learnd.daemon.events.synthetic import DriftingSEA

pytestmark = pytest.mark.e2e

LEARND = shutil.which("learnd", path=str(Path(sys.executable).parent)) or "learnd"


def run(*args, timeout=60, **kw):
    return subprocess.run([LEARND, *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = EmbeddedBroker(log_path=tmp_path_factory.mktemp("b") / "tansu.log").start()
    yield b.bootstrap
    b.stop()


def write_config(tmp_path, bootstrap, port, metrics_port, suffix):
    cfg = tmp_path / "learnd.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
topic = "e2e-{suffix}"
dead_letter_topic = "e2e-{suffix}-dlq"
group_id = "e2e-{suffix}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_interval_ms = 10000

[schema]
task = "binary"
features = ["x1", "x2", "x3"]

[serving]
tcp_port = {port}
unix_path = "{tmp_path / "learnd.sock"}"

[metrics]
port = {metrics_port}

[checkpoint]
dir = "{tmp_path / "state"}"
""")
    return cfg


def wait_until(fn, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_predict_health_and_graceful_sigterm(tmp_path, broker):
    port, mport = free_port(), free_port()
    cfg_path = write_config(tmp_path, broker, port, mport, "a")
    cfg = build_config(file=cfg_path, environ={})
    ensure_topics(cfg.kafka, partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    stream = iter(DriftingSEA(seed=21))
    for i in range(3000):
        producer.send(cfg.kafka.topic, orjson.dumps(next(stream)), partition=i % 2)
    producer.flush(30)
    stop = threading.Event()

    def trickle():  # a live stream: the publish gate scores candidates on fresh events
        i = 3000
        while not stop.is_set():
            for _ in range(50):
                producer.send(cfg.kafka.topic, orjson.dumps(next(stream)), partition=i % 2)
                i += 1
            time.sleep(0.05)

    feeder = threading.Thread(target=trickle)
    feeder.start()

    env = {**os.environ, "LEARND_CONFIG": str(cfg_path), "LEARND_LOG__FORMAT": "json"}
    proc = subprocess.Popen(
        [LEARND, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        def trained():  # a learned model, right on both corners (an early one may not be)
            r = run("predict", "--tcp", f"127.0.0.1:{port}", '{"x1": 9, "x2": 9, "x3": 0}')
            low = run("predict", "--tcp", f"127.0.0.1:{port}", '{"x1": 0.1, "x2": 0.1, "x3": 0}')
            if r.returncode != 0 or low.returncode != 0:
                return None
            ans = json.loads(r.stdout)
            if ans["version"] < 2 or ans["prediction"] != 1:
                return None
            return ans if json.loads(low.stdout)["prediction"] == 0 else None

        ans = wait_until(trained, 60, "a trained model answering")
        assert ans["ok"] and ans["prediction"] == 1
        r = run("predict", "--unix", str(tmp_path / "learnd.sock"), input="[0.1, 0.1, 0]\n[1]\n")
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert lines[0]["prediction"] == 0 and lines[1]["error"] == "wrong_dimension"
        assert r.returncode == 1
        health = run("health", "--tcp", f"127.0.0.1:{port}")
        assert health.returncode == 0 and json.loads(health.stdout)["status"] == "ready"
    finally:
        stop.set()
        feeder.join(10)
        producer.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = [rec.get("event") for rec in logs]
    assert "start" in events and "shutdown" in events and "checkpoint" in events
    assert events[-1] == "stop"
    assert list((tmp_path / "state").glob("ckpt-*.pt"))
    assert not (tmp_path / "learnd.sock").exists()


def test_invalid_config_stops_startup_with_the_field_named(tmp_path):
    r = run(
        "run",
        "--set",
        "schema.n_features=3",
        "--set",
        "kafka.auto_offset_reset=newest",
        env={**os.environ, "LEARND_CONFIG": ""},
    )
    assert r.returncode == 2
    assert "kafka.auto_offset_reset: Input should be 'earliest' or 'latest'" in r.stderr
    r = run("run", "--set", "schema.n_features=3", "--set", "serving.tcp_host=0.0.0.0")
    assert r.returncode == 2 and "not a loopback address" in r.stderr


def test_demo_learns_and_stops_cleanly(tmp_path):
    r = run(
        "demo",
        "--duration",
        "16",
        "--every",
        "2",
        "--rate",
        "4000",
        "--switch-every",
        "20000",
        "--state-dir",
        str(tmp_path / "demo"),
        "--set",
        f"serving.tcp_port={free_port()}",
        "--set",
        f"metrics.port={free_port()}",
        timeout=90,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "learnd demo stopped cleanly" in r.stdout
    progress = re.findall(
        r"learned=\s*([\d,]+).*rolling_acc=([\d.]+|nan) \(low (?:[\d.]+|-)\) concept=(\d+) version=\s*(\d+)",
        r.stdout,
    )
    assert len(progress) >= 5
    learned = [int(n.replace(",", "")) for n, *_ in progress]
    accs = [float(a) for _, a, _, _ in progress if a != "nan"]
    versions = [int(v) for *_, v in progress]
    assert learned[-1] > 20_000 and learned == sorted(learned)
    assert accs[-1] > 0.85
    assert versions[-1] > versions[0]
    assert {c for _, _, c, _ in progress} >= {"0", "1"}, "the stream switched concept"


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_serving_processes_exit_with_a_killed_daemon_and_free_the_port(tmp_path, when):
    """SIGKILL gives the daemon no chance to stop its serving processes: they must notice and
    exit by themselves, or a restarted daemon could not bind its port (nor would a parent
    reading its output ever see the end of it). Killed while they are still starting, or once
    they serve."""
    port = free_port()
    env = {
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # no broker: serving only
        "LEARND_SCHEMA__N_FEATURES": "3",
        "LEARND_CHECKPOINT__DIR": str(tmp_path / "state"),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_SERVING__PROCESSES": "2",
        "LEARND_METRICS__ENABLED": "false",
    }
    proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        serving: list[int] = []
        while time.monotonic() < deadline:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            # spawn's children run multiprocessing's entry point; the other child is its
            # resource tracker (which outlives the daemon to remove its shared memory)
            serving = [int(c) for c in children if "spawn_main" in _cmdline(int(c))]
            if len(serving) == 2 and (
                when == "starting" or run("health", "--tcp", f"127.0.0.1:{port}").stdout
            ):
                break
            time.sleep(0.01 if when == "starting" else 0.2)
        assert len(serving) == 2
        scope = segment_scope(CheckpointConfig(dir=tmp_path / "state"))
        created = _segments(segment_prefix(scope, proc.pid))
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(c) for c in serving):
        time.sleep(0.05)
    assert not [c for c in serving if _alive(c)]
    import socket

    try:
        with socket.create_server(("127.0.0.1", port)):  # free again
            pass
    except OSError as e:
        pytest.fail(f"port {port} still taken ({e}): {_port_holders(port)}")
    # the daemon's shared-memory segments are removed by its resource tracker
    prefix = segment_prefix(scope, proc.pid)
    assert created, "the daemon made shared-memory segments for its serving processes"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _segments(prefix):
        time.sleep(0.1)
    assert not _segments(prefix)


def _segments(prefix: str) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


def _port_holders(port: int) -> list[str]:
    """Who holds a local TCP port: state, and each process with the socket open."""
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "0A": "LISTEN", "08": "CLOSE_WAIT"}
    inodes: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes[f[9]] = f"{f[1]}->{f[2]} {states.get(f[3], f[3])}"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                inode = link[len("socket:[") : -1] if link.startswith("socket:[") else ""
                if inode in inodes:
                    found.append(f"pid {proc.name} ({_cmdline(int(proc.name))}): {inodes[inode]}")
        except OSError:
            continue
    return found or [f"no process; sockets: {sorted(inodes.values())}"]


def _alive(pid: int) -> bool:
    """Any of its threads still running. An exited child nobody has reaped is a zombie and holds
    no sockets, but its main thread turns zombie before its other threads have finished exiting,
    and their shared file table (the listening socket with it) goes only with the last one."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return True
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
