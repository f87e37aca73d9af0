"""Served forms side by side: size, batch-1 latency and accuracy of each compressed copy.

    .venv/bin/python bench/forms.py             # default model and a ~1M-parameter model
    .venv/bin/python bench/forms.py --quick     # fewer training steps and timing calls

For each model: trains it online for a while (the learner, as the daemon would), exports the
plain copy, builds every form that runs here (daemon/serving/compress.py) and prints parameters, bytes,
sparsity, batch-1 latency (median and p99 of single calls, the form's forward only), speed-up
over the torch fp32 copy, accuracy on fresh events against the plain copy, and whether the
default compression tolerance (0.5 points) would let it be served. The CUDA forms appear on a
machine with a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from learnd.daemon.config import CompressionConfig, LearningConfig, ModelConfig, SchemaConfig  # noqa: E402
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA  # noqa: E402
from learnd.daemon.learning.learner import Learner  # noqa: E402
from learnd.daemon.serving.compress import FORMS, Unavailable, build_form, call_times  # noqa: E402
from learnd.daemon.serving.snapshot import Draft, Snapshot  # noqa: E402


def sea(n):
    events = list(DriftingSEA(seed=7, switch_every=10**9).take(n))
    X = np.array([[e["features"][k] for k in FEATURES] for e in events], np.float32)
    return X, np.array([e["label"] for e in events], np.float32)


def hyperplane(n, dim, seed=0):
    """A noisy hyperplane in ``dim`` dimensions with a nonlinear twist (so depth helps)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim)
    X = rng.uniform(-1, 1, size=(n, dim)).astype(np.float32)
    score = X @ w + 2.0 * np.sin(3 * X[:, 0]) * np.abs(X[:, 1])
    y = (score > 0).astype(np.float32)
    flip = rng.random(n) < 0.05
    y[flip] = 1 - y[flip]
    return X, y


def timings(forward, dim, calls):
    t = sorted(call_times(forward, dim, calls, warmup=20))
    return statistics.median(t) * 1e6, t[int(0.99 * (len(t) - 1))] * 1e6


def bench_model(name, hidden, X, y, train, batch, calls, schema):
    lrn = Learner(schema, ModelConfig(hidden=hidden), LearningConfig(lr=1e-3), "cpu")
    t0 = time.perf_counter()
    for i in range(0, train, batch):
        lrn.learn_many(X[i : i + batch], y[i : i + batch])
    train_s = time.perf_counter() - t0
    draft = Draft("binary", (0, 1), None, lrn.export(), train, {})
    Xh, yh = X[train:], y[train:]
    plain = Snapshot.from_draft(draft, -1)
    plain_acc = float(np.mean(plain.predict_many(Xh).argmax(1) == yh))
    tol = CompressionConfig().tolerance
    c = CompressionConfig()
    print(
        f"\n## {name}: {schema.dim} -> {' -> '.join(map(str, hidden))} -> 1, "
        f"{lrn.n_parameters:,} parameters; trained on {train:,} events in {train_s:.1f} s, "
        f"held-out {len(yh):,}; plain accuracy {plain_acc:.4f}\n"
    )
    print(
        "| form | parameters | size KiB | sparsity | p50 us | p99 us | vs torch-fp32 "
        "| accuracy | vs plain (pts) | within 0.5 pts |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    ref_us = None
    for form in ("torch", "numpy", "prune", "prune-units", "int8", "fp16", "bf16"):
        try:
            fwd = build_form(form, draft.weights, c.prune_amount, c.units_amount)
        except Unavailable as e:
            rows.append(f"| {form} | - | - | - | - | - | - | - | - | unavailable: {e} |")
            continue
        snap = Snapshot.from_draft(Draft(**{**_fields(draft), "forward": fwd}), -1)
        acc = float(np.mean(snap.predict_many(Xh).argmax(1) == yh))
        p50, p99 = timings(snap.predict_many, schema.dim, calls)
        if form == "torch":
            ref_us = p50
        speed = f"{ref_us / p50:.2f}x" if ref_us else "-"
        ok = "yes" if plain_acc - acc <= tol else "no"
        rows.append(
            f"| {fwd.form} | {fwd.n_parameters:,} | {snap.size_bytes / 1024:,.1f} | "
            f"{fwd.sparsity:.2f} | {p50:.1f} | {p99:.1f} | {speed} | {acc:.4f} | "
            f"{100 * (acc - plain_acc):+.2f} | {ok} |"
        )
    print("\n".join(rows))


def _fields(draft):
    return {f: getattr(draft, f) for f in draft.__slots__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("LEARND_BENCH_THREADS", "1")))
    calls = 300 if args.quick else 2000
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CUDA device: {device}; "
        f"forms known: {', '.join(FORMS)}; latency = one predict call at batch 1 "
        "(scaling, forward, link), median / p99 of "
        f"{calls} calls"
    )
    X, y = sea(20_000)
    bench_model(
        "default model (SEA)",
        (64, 64),
        X,
        y,
        16_000,
        32,
        calls,
        SchemaConfig(task="binary", features=FEATURES),
    )
    n_train = 8_000 if args.quick else 30_000
    X, y = hyperplane(n_train + 4000, 256)
    bench_model(
        "~1M parameters (256-d hyperplane)",
        (1024, 768),
        X,
        y,
        n_train,
        64,
        calls // 2,
        SchemaConfig(task="binary", n_features=256),
    )


if __name__ == "__main__":
    main()
