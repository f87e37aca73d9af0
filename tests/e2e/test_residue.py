"""RELIABILITY test 22: a SIGKILL of the daemon's whole process group leaves nothing behind once
a daemon restarts on the same state: no shared-memory segment, socket file or child process.

The group kill is what a container runtime or the OOM killer does: the daemon, its serving
processes and Python's resource tracker (which would otherwise unlink the segments) all die at
once. No broker is needed: the daemon serves its (initial) model while it waits for one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnd.adapters.kafka.broker import free_port
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.serving.segments import SHM_DIR, segment_scope
from learnd.daemon.config import CheckpointConfig

pytestmark = pytest.mark.e2e

LEARND = shutil.which("learnd", path=str(Path(sys.executable).parent)) or "learnd"


def _segments(scope: str) -> dict[int, list[str]]:
    """This state's segments, by the pid that created them."""
    out: dict[int, list[str]] = {}
    for name in os.listdir(SHM_DIR):
        if name.startswith(f"learnd_{scope}_"):
            out.setdefault(int(name.split("_")[2]), []).append(name)
    return out


def _group(pgid: int) -> list[int]:
    """Processes still in process group ``pgid`` (zombies aside)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _start(env) -> subprocess.Popen:
    return subprocess.Popen(
        [LEARND, "run"], env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )


def _serving(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with LearndClient.tcp("127.0.0.1", port, timeout=1) as c:
                if c.health().get("version"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the daemon did not serve on port {port} within {timeout_s}s")


def test_a_restart_after_a_group_sigkill_removes_what_the_dead_daemon_left(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    env = {
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # no broker: serving only
        "LEARND_SCHEMA__N_FEATURES": "3",
        "LEARND_CHECKPOINT__DIR": str(state),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_SERVING__UNIX_PATH": str(tmp_path / "learnd.sock"),
        "LEARND_SERVING__PROCESSES": "2",
        "LEARND_METRICS__ENABLED": "false",
    }
    scope = segment_scope(CheckpointConfig(dir=state))
    first = _start(env)
    second = None
    try:
        _serving(port)
        made = _segments(scope)
        assert list(made) == [first.pid] and made[first.pid]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 10
        while _group(first.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _group(first.pid) == []  # every child died with it
        assert _segments(scope) == made  # nobody was left to remove them

        second = _start(env)
        _serving(port)
        with LearndClient.unix(str(tmp_path / "learnd.sock")) as c:  # the stale socket replaced
            assert c.health()["version"]
        assert list(_segments(scope)) == [second.pid]  # the dead daemon's are gone
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        assert _segments(scope) == {}  # and a clean stop removes its own
        assert not (tmp_path / "learnd.sock").exists()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for names in _segments(scope).values():
            for name in names:
                (SHM_DIR / name).unlink(missing_ok=True)
