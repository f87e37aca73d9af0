"""In-process learning speed: test-then-train examples/s by device, batch size and model size.

    .venv/bin/python bench/learner.py            # CPU, and CUDA where torch sees a GPU

No Kafka, no decoding: arrays go straight into ``Learner.learn_many`` (standardisation, forward,
loss, backward, fused Adam step, guards), the ceiling the rest of the pipeline works under.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig  # noqa: E402
from learnd.daemon.learning.learner import Learner  # noqa: E402


def rate(device, hidden, batch, n, dim=3):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.float32)
    lrn = Learner(
        SchemaConfig(task="binary", n_features=dim),
        ModelConfig(hidden=hidden),
        LearningConfig(),
        device,
    )
    for i in range(0, min(n, 50 * batch), batch):  # warm-up (CUDA context, kernels)
        lrn.learn_many(X[i : i + batch], y[i : i + batch])
    t0 = time.perf_counter()
    errs = 0.0
    for i in range(0, n, batch):
        errs += float(lrn.learn_many(X[i : i + batch], y[i : i + batch]).errors.sum())
    dt = time.perf_counter() - t0
    return n / dt, 1 - errs / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--hidden", default="64x64,1024x768", help="comma-separated model sizes")
    ap.add_argument("--batches", default="1,32,256", help="comma-separated batch sizes")
    args = ap.parse_args()
    sizes = [tuple(int(h) for h in size.split("x")) for size in args.hidden.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"torch {torch.__version__}, 1 CPU thread, {name}; {args.events:,} events per cell")
    print("\n| device | model | batch | examples/s | prequential accuracy |")
    print("|---|---|---|---|---|")
    for device in devices:
        for hidden in sizes:
            for batch in batches:
                n = args.events if batch > 1 else args.events // 20
                if hidden[0] > 256 and device == "cpu" and batch < 32:
                    continue
                r, acc = rate(device, hidden, batch, n)
                label = "x".join(map(str, hidden))
                print(f"| {device} | {label} | {batch} | {r:,.0f} | {acc:.3f} |")


if __name__ == "__main__":
    main()
