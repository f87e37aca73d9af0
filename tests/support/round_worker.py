"""One learner of a group, run as its own process by tests/integration/test_distributed_round.py.

``python -m tests.support.round_worker RANK SIZE PORT OUT MODE``: joins the gloo group at
``tcp://127.0.0.1:PORT``, learns its own shard (seeded by its rank) with a round every 4 batches,
and writes to ``OUT/RANK.pt`` its state vector after every round and each round's drift flag.
MODE ``learn``: the last rank notes a drift alarm before the second round. MODE ``desert``:
rank 1 leaves after the rendezvous and rank 0 records the round's failure.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from learnd.adapters.distributed import TorchAverager
from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.parameter_round import ParameterRound
from learnd.daemon.learning.state_vector import gather
from learnd.daemon.ports import RoundFailed

# parameter rounds average one network: no linear member beside the MLP
ONE_NETWORK = LearningConfig(linear_member={"enabled": False})

EVERY = 4
ROUNDS = 3


def shard(rank: int, n: int = 32 * EVERY * ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + rank)
    X = rng.normal(rank, 1.0 + rank, size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] - X[:, 1] > 0).astype(np.float32)


def main(rank: int, size: int, port: int, out: str, mode: str) -> None:
    torch.set_num_threads(1)
    lrn = Learner(SchemaConfig(task="binary", n_features=4), ModelConfig(hidden=(16,)), ONE_NETWORK)
    # the rendezvous waits for the slowest process's imports (seconds on loaded cores)
    averager = TorchAverager(rank, size, f"tcp://127.0.0.1:{port}", timeout_s=90)
    rnd = ParameterRound(lrn, averager, EVERY)
    record: dict = {"states": [], "drift": [], "failed": None, "bytes": []}
    if mode == "desert":
        if rank == 1:
            averager.close()
            return
        t0 = time.monotonic()
        try:
            rnd.run()
        except RoundFailed as e:
            record["failed"] = (str(e)[:200], time.monotonic() - t0)
        torch.save(record, f"{out}/{rank}.pt")
        return
    X, y = shard(rank)
    for i in range(0, len(y), 32):
        lrn.learn_many(X[i : i + 32], y[i : i + 32])
        lrn.replay(2)
        if rank == size - 1 and rnd.rounds == 1 and rnd.batches % EVERY == EVERY - 1:
            rnd.note_alarm()
        outcome = rnd.after_batch()
        if outcome is not None:
            record["states"].append(gather(lrn))
            record["drift"].append(outcome.drift)
            record["bytes"].append(outcome.bytes)
    record["lr"] = lrn.lr
    averager.close()
    torch.save(record, f"{out}/{rank}.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
