"""The table's in-place step against the plain expressions it replaces, bit for bit.

:meth:`Embeddings.step` gathers the touched rows once, updates them in scratch buffers and
sums a row's repeated gradients without sorting; ``reference_step`` below is the same update
written as plain numpy expressions over sorted unique rows. Seeded batches with repeated
rows, empty slots (tokens) and several key columns, for each optimizer and with and without
the weight average: the weights, averages, moments and per-row fold logs must be equal
(tolerance 0).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
from learnd.daemon.learning.embeddings import Embeddings

LAYOUT = FeatureLayout.of(
    {
        "x": FeatureSpec(type="number"),
        "c": FeatureSpec(type="category", vocabulary=6, buckets=16),
        "t": FeatureSpec(type="tokens", max_tokens=3, vocabulary=4, buckets=8),
    }
)


def reference_step(emb: Embeddings, idx: np.ndarray, first_grad: torch.Tensor, lr: float):
    """The step as plain expressions: sorted unique rows, sums of runs, new arrays."""
    n, s = idx.shape
    grad = first_grad.numpy()
    flat = idx.reshape(-1)
    valid = flat >= 0
    if not valid.any():
        return
    src, keys = np.repeat(grad, s, axis=0)[valid], flat[valid]
    uniq, inv = np.unique(keys, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    g = np.add.reduceat(src[order], starts, axis=0)
    state = emb._packed[uniq]
    w = state[:, 0]
    if emb.decay > 0:
        factor = np.exp(emb._log - emb._row_log[uniq]).astype(np.float32)[:, None]
        state[:, 1] = w + (state[:, 1] - w) * factor
        emb._row_log[uniq] = emb._log
    emb.steps += 1
    if emb._moments == 2:
        b1, b2 = emb.betas
        mu, nu = state[:, -2], state[:, -1]
        mu *= b1
        mu += (1 - b1) * g
        nu *= b2
        nu += (1 - b2) * g * g
        c1, c2 = 1 - b1**emb.steps, 1 - b2**emb.steps
        w -= (lr / c1) * mu / (np.sqrt(nu / c2) + emb.eps)
    elif emb._moments == 1:
        nu = state[:, -1]
        nu += g * g
        w -= lr * g / (np.sqrt(nu) + 1e-10)
    else:
        w -= lr * g
    emb._packed[uniq] = state


def batches(seed: int, n_batches: int = 30):
    """Key columns: the category's rows drawn from a few (repeats in most batches), the
    tokens' with empty slots."""
    rng = np.random.default_rng(seed)
    for b in range(n_batches):
        n = 1 + b % 9 if b % 3 else 32
        cat = rng.integers(0, 12, size=(n, 1)).astype(np.float32)
        tok = rng.integers(0, 20, size=(n, 3)).astype(np.float32)
        tok[rng.random((n, 3)) < 0.3] = -1.0
        yield np.hstack([cat, tok]), torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32))


@pytest.mark.parametrize("optimizer", ["adam", "adagrad", "sgd"])
@pytest.mark.parametrize("decay", [0.0, 0.8])
@pytest.mark.parametrize("columns", ["all", "category"])
def test_step_equals_the_plain_expressions(optimizer: str, decay: float, columns: str) -> None:
    emb = Embeddings(LAYOUT, width=5, optimizer=optimizer, decay=decay)
    ref = copy.deepcopy(emb)
    repeated = 0
    for K, grad in batches(seed=len(optimizer) + int(10 * decay)):
        idx = emb.rows(K, add=True)
        ref.rows(K, add=True)
        if columns == "category":
            idx = idx[:, :1].copy()
        valid = idx[idx >= 0]
        repeated += len(np.unique(valid)) < len(valid)
        emb.fold()
        ref.fold()
        emb.step(idx, grad, lr=0.05)
        reference_step(ref, idx, grad, lr=0.05)
    assert repeated > 5  # the summing path was taken, not only the distinct one
    assert emb.steps == ref.steps
    assert np.array_equal(emb._packed, ref._packed)
    assert np.array_equal(emb._row_log, ref._row_log)
    assert float(np.abs(emb.table).sum()) > 0


def test_distinct_rows_take_the_gradients_as_they_are() -> None:
    """Distinct rows of one category, none empty: each row moves by its own line only."""
    emb = Embeddings(LAYOUT, width=2, optimizer="sgd", decay=0.0)
    idx = np.array([[3], [1], [7]], np.int64)
    grad = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    emb.step(idx, grad, lr=0.5)
    assert emb.table[[3, 1, 7]].tolist() == [[-0.5, -1.0], [-1.5, -2.0], [-2.5, -3.0]]
    assert float(np.abs(emb.table).sum()) == 10.5


def test_repeated_rows_take_the_sum_of_their_lines() -> None:
    emb = Embeddings(LAYOUT, width=1, optimizer="sgd", decay=0.0)
    idx = np.array([[2], [4], [2], [2]], np.int64)
    grad = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    emb.step(idx, grad, lr=1.0)
    assert emb.table[[2, 4], 0].tolist() == [-1101.0, -10.0]


RESIDENT = """
import os
from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
from learnd.daemon.learning.embeddings import Embeddings

layout = FeatureLayout.of({"c": FeatureSpec(type="category", vocabulary=10, buckets=1 << 16)})


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


before = rss()
emb = Embeddings(layout, width=64, optimizer="adam", decay=0.8)
print(rss() - before, emb._packed.nbytes)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm")
def test_the_table_is_resident_when_made() -> None:
    """The table is written when made: no step pays the page faults of first writes. Measured
    in a fresh process: in this one, memory freed by earlier tests and still resident can be
    reused for the table without RSS growing."""
    out = subprocess.run(
        [sys.executable, "-c", RESIDENT], capture_output=True, text=True, check=True, timeout=120
    )
    grown, nbytes = map(int, out.stdout.split())
    assert nbytes == (1 + 10 + (1 << 16)) * 4 * 64 * 4
    assert grown >= 0.9 * nbytes
