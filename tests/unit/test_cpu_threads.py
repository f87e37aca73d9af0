"""numpy's BLAS is held to the threads learnd is given (adapters/cpu_threads.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# OpenBLAS starts one thread per core (at most): with one core there is nothing to limit.
pytestmark = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="one CPU: numpy's BLAS pool has one thread already"
)

PROBE = """
import json, numpy
from threadpoolctl import threadpool_info
from learnd.adapters.cpu_threads import limit_blas_threads
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
limit_blas_threads({n})
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps([before, after]))
"""


def blas_threads(n: int) -> tuple[list[int], list[int]]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(n=n)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": ""},
    )
    before, after = json.loads(out.stdout)
    return before, after


def test_limit_blas_threads_shrinks_numpys_pool():
    before, after = blas_threads(1)
    assert before and all(n >= 2 for n in before), "numpy starts a pool of several threads"
    assert after == [1] * len(before)


def test_the_daemon_gives_numpy_as_many_threads_as_torch(tmp_path):
    from tests.conftest import sea_config

    probe = f"""
import json
from threadpoolctl import threadpool_info
from learnd.adapters.bootstrap import Daemon
from learnd.adapters.fakes import ListDeadLetters, ListSource, MemoryCheckpointStore
from learnd.daemon.config import LearndConfig
cfg = LearndConfig.model_validate_json({sea_config(tmp_path, learning={"threads": 1}).model_dump_json()!r})
Daemon(cfg, source=ListSource(), dead_letters=ListDeadLetters(), store=MemoryCheckpointStore())
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": ""},
    )
    threads = json.loads(out.stdout.strip().splitlines()[-1])
    assert threads and all(n == 1 for n in threads)
