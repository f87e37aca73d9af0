"""One of two processes timing a parameter round's reductions over gloo on loopback
(bench/distributed.py starts both): ``python bench/_allreduce.py RANK PORT REPS SMALL,BIG ...``.
Rank 0 prints one JSON line: per ``SMALL,BIG`` pair (the two reductions' float64 values), the
median and the 90th percentile seconds of both ``TorchAverager.mean`` calls of a round."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from learnd.adapters.distributed import TorchAverager  # noqa: E402


def main(rank: int, port: int, reps: int, pairs: list[tuple[int, int]]) -> None:
    torch.set_num_threads(1)
    avg = TorchAverager(rank, 2, f"tcp://127.0.0.1:{port}", timeout_s=60)
    out = {}
    for small, big in pairs:
        a = torch.rand(small, dtype=torch.float64)
        b = torch.rand(big, dtype=torch.float64)
        for _ in range(10):  # warm-up
            avg.mean(a), avg.mean(b)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            avg.mean(a)
            avg.mean(b)
            times.append(time.perf_counter() - t0)
        out[f"{small},{big}"] = (float(np.median(times)), float(np.percentile(times, 90)))
    avg.close()
    if rank == 0:
        print(json.dumps(out))


if __name__ == "__main__":
    pairs = [tuple(int(v) for v in p.split(",")) for p in sys.argv[4:]]
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), pairs)  # type: ignore[arg-type]
