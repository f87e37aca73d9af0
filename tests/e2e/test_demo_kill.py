"""`learnd demo` killed with SIGKILL (its whole process group): no embedded broker left running,
and the next run says how to resume the killed one instead of starting over silently."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from learnd.adapters.kafka.broker import free_port

from .test_cli import LEARND, _alive

pytestmark = pytest.mark.e2e


def demo_cmd(*extra):
    return [
        LEARND,
        "demo",
        "--rate",
        "500",
        "--every",
        "1",
        "--set",
        f"serving.tcp_port={free_port()}",
        "--set",
        f"metrics.port={free_port()}",
        "--set",
        "checkpoint.every_s=1",
        *extra,
    ]


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_killed_demo_leaves_no_broker_and_the_next_run_says_how_to_resume(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the demo's temporary state goes
    proc = subprocess.Popen(
        demo_cmd(), env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        first = proc.stdout.readline()
        state = Path(re.search(r"state in (\S+)", first)[1])
        deadline = time.monotonic() + 90
        while not list((state / "checkpoints").glob("ckpt-*.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        brokers = [c for c in children(proc.pid) if "tansu" in cmdline(c)]
        assert len(brokers) == 1, [cmdline(c) for c in children(proc.pid)]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    while _alive(brokers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(brokers[0]), f"orphaned broker: {cmdline(brokers[0])}"

    again = subprocess.run(
        demo_cmd("--duration", "1"), env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (
        f"an earlier demo was killed; its state is in {state}: resume it with "
        f"`learnd demo --state-dir {state}` (this one starts afresh)"
    ) in again.stdout

    resumed = subprocess.run(
        demo_cmd("--duration", "1", "--state-dir", str(state)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming the model checkpointed in {state}" in resumed.stdout
    assert "an earlier demo" not in resumed.stdout
    assert resumed.stdout.strip().endswith(f"`learnd demo --state-dir {state}` resumes it")
