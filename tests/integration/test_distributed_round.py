"""Parameter rounds between real processes over gloo on loopback (tests/support/round_worker.py):
after every round the whole learner state is the same bit for bit in every process, a drift
alarm noted by one process reaches all, and a deserted round fails at its deadline."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from learnd.adapters.fakes import InProcessGroup
from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.parameter_round import ParameterRound
from tests.support.round_worker import EVERY, ROUNDS, shard

# parameter rounds average one network: no linear member beside the MLP
ONE_NETWORK = LearningConfig(linear_member={"enabled": False})

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch has no gloo backend"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_group(size: int, out: Path, mode: str) -> list[dict]:
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.round_worker",
                str(r),
                str(size),
                str(port),
                str(out),
                mode,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(size)
    ]
    # generous: each process imports torch (about 2 s alone, 8-10 s on two cores shared with
    # other work), and this test checks what a round does, not how fast
    logs = [p.communicate(timeout=150)[0].decode() for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return [torch.load(out / f"{r}.pt") for r in range(size) if (out / f"{r}.pt").exists()]


def _in_process(size: int) -> list[torch.Tensor]:
    """The same learners and shards through in-process peers: the states after each round."""
    from concurrent.futures import ThreadPoolExecutor

    from learnd.daemon.learning.state_vector import gather

    group = InProcessGroup(size)
    # made here, one after another: a learner draws its first weights from torch's global
    # generator (seeded, then restored), which threads making learners at once would share
    learners = [
        Learner(SchemaConfig(task="binary", n_features=4), ModelConfig(hidden=(16,)), ONE_NETWORK)
        for _ in range(size)
    ]

    def one(rank: int) -> list[torch.Tensor]:
        lrn = learners[rank]
        rnd = ParameterRound(lrn, group.member(rank), EVERY)
        X, y = shard(rank)
        states = []
        for i in range(0, len(y), 32):
            lrn.learn_many(X[i : i + 32], y[i : i + 32])
            lrn.replay(2)
            if rank == size - 1 and rnd.rounds == 1 and rnd.batches % EVERY == EVERY - 1:
                rnd.note_alarm()
            if rnd.after_batch() is not None:
                states.append(gather(lrn))
        return states

    with ThreadPoolExecutor(size) as pool:
        return list(pool.map(one, range(size)))[0]


@pytest.mark.parametrize("size", [2, 3])
def test_after_every_round_the_state_is_bit_equal_across_processes(size, tmp_path):
    records = _run_group(size, tmp_path, "learn")
    assert len(records) == size
    for rec in records:
        assert len(rec["states"]) == ROUNDS
    for k in range(ROUNDS):
        first = records[0]["states"][k]
        assert all(torch.equal(rec["states"][k], first) for rec in records[1:])
    # the last rank's alarm before the second round reached every process at that round
    assert all(rec["drift"] == [False, True, False] for rec in records)
    lrs = {rec["lr"] for rec in records}
    assert len(lrs) == 1 and lrs.pop() > LearningConfig().lr  # all boosted, the same
    assert all(rec["bytes"] == records[0]["bytes"] for rec in records)
    # and it is the arithmetic of the in-process peers: exactly for 2 (a + b is b + a), to
    # rounding for 3 (gloo's ring may add in another order)
    local = _in_process(size)
    for k in range(ROUNDS):
        if size == 2:
            assert torch.equal(records[0]["states"][k], local[k])
        else:
            torch.testing.assert_close(records[0]["states"][k], local[k], rtol=1e-6, atol=1e-9)


def test_a_round_a_peer_deserted_fails_at_its_deadline(tmp_path):
    (rec,) = _run_group(2, tmp_path, "desert")
    message, waited = rec["failed"]
    assert "all_reduce over 2 learners failed" in message
    assert waited < 30
