"""Categories as the first layer's columns for their rows, learned with sparse updates.

A category value's one-hot column in the first layer is one row of a table ``(rows, width)``
(``width``: the first layer's outputs): the first layer computes ``W x + b + sum of the rows
of the event's values``. A step touches only the rows of the values in its batch: their
gradients (the first layer's output gradients, summed per row), their Adam moments ("lazy"
Adam: the moments of untouched rows stay, the bias correction uses the step count), and
their share of the weight average. So a 2**18-bucket feature costs a step what its batch's
values cost, not what the table holds. Weight decay is not applied to the table.

The average (:mod:`learnd.daemon.learning.averaging`) is kept exactly, lazily: between two
changes of a row its weights are constant, so ``k`` folds with decays ``d_1..d_k`` leave its
average at ``w + (avg - w) * d_1 * ... * d_k``. The running sum of ``log d`` is kept, and each
row remembers it from when it was last brought up to date; a row is brought up to date before
it changes and when it is read.

The table and its state live in host memory as numpy arrays, whatever the device of the
network: only a batch's sums of rows and the first layer's output gradients move. A step's
dozen small array operations cost ~1-3 us each in numpy against ~5-10 us as torch calls (at
batch 32 the per-call overhead, not arithmetic, is the cost). The table is written once when
it is made (:func:`written_zeros`), so its memory is held from the start and no step pays the
page faults of rows written for the first time.

Examples
--------
>>> import numpy as np, torch
>>> from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
>>> lay = FeatureLayout.of({"c": FeatureSpec(type="category", vocabulary=2, buckets=4)})
>>> emb = Embeddings(lay, width=3, optimizer="adam", decay=0.5)
>>> idx = emb.rows(np.array([[7.0], [9.0]], np.float32), add=True)
>>> emb.step(idx, torch.ones(2, 3), lr=0.1)
>>> [round(float(v), 4) for v in emb.table[1:3, 0]], float(abs(emb.table[3:]).sum())  # 2 rows
([-0.1, -0.1], 0.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from learnd.daemon.config_schema import FeatureLayout
from learnd.daemon.learning.averaging import WARMUP
from learnd.daemon.learning.vocabulary import Vocabulary


def written_zeros(shape: int | tuple[int, ...], dtype: type) -> np.ndarray:
    """Zeros written now: ``np.zeros`` maps pages on first write, and a step that scatters
    its rows onto pages not written yet paid a page fault per row (the scatter was 97% of a
    step's time, 215 us against 5 us, learning 30k events over 10^4 ids into 2**18 buckets).
    Writing the table once at start-up costs ~0.05-0.6 s per 256 MB."""
    out: np.ndarray = np.empty(shape, dtype)
    out.fill(0)
    return out


class Embeddings:
    """The table of category rows, its optimizer state, its average and the vocabulary."""

    def __init__(
        self,
        layout: FeatureLayout,
        width: int,
        optimizer: str,
        decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        device: torch.device | str = "cpu",
    ):
        self.layout = layout
        self.n_numeric = layout.n_numeric
        self.vocab = Vocabulary(layout)
        self.optimizer = optimizer
        self.decay = decay
        self.betas = betas
        self.eps = eps
        self.device = torch.device(device)
        n = layout.n_rows
        self._moments = 2 if optimizer in ("adam", "adamw") else 1 if optimizer == "adagrad" else 0
        # Each row's weights, average and moments side by side: a step reads and writes a
        # row's whole state with one gather and one scatter.
        self._k = 1 + (decay > 0) + self._moments
        self._packed = written_zeros((n, self._k, width), np.float32)
        self._row_log = written_zeros(n, np.float64)
        self._log = 0.0  # sum of log d over the folds since the last reset
        self.folds = 0
        self.steps = 0
        self._finite = True  # every row written so far finite (checked on the rows a step wrote)
        # scratch of step(): a row's last position in the batch, positions, intermediates
        self._slot = written_zeros(n, np.int64)
        self._positions = np.arange(256, dtype=np.int64)
        self._t1 = self._t2 = np.empty((0, width), np.float32)

    @property
    def table(self) -> np.ndarray:
        return self._packed[:, 0]

    @property
    def width(self) -> int:
        return self._packed.shape[2]

    # the encoded row -----------------------------------------------------------------------
    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(numeric columns, key columns) of encoded rows."""
        return X[:, : self.n_numeric], X[:, self.n_numeric :]

    def rows(self, K: np.ndarray, add: bool) -> np.ndarray:
        return self.vocab.rows(K, add)

    # reading -------------------------------------------------------------------------------
    def _weight(self, n: int) -> float:
        return min(self.decay, (1 + n) / (WARMUP + n))

    def _sync(self, rows: np.ndarray) -> None:
        """Bring the average of ``rows`` (unique) up to the last fold."""
        if self.decay <= 0:
            return
        factor = np.exp(self._log - self._row_log[rows]).astype(np.float32)[:, None]
        state = self._packed[rows]
        w = state[:, 0]
        state[:, 1] = w + (state[:, 1] - w) * factor
        self._packed[rows] = state
        self._row_log[rows] = self._log

    def sum(self, idx: np.ndarray, which: str) -> torch.Tensor:
        """Per event, the sum of its rows ``(n, width)``: of the weights (``"weights"``), of
        the average as of the last fold (``"avg"``) or as the next fold will leave it
        (``"now"``, what is exported)."""
        valid = idx >= 0
        every = bool(valid.all())
        safe = idx if every else np.maximum(idx, 0)
        if which == "weights" or self.decay <= 0:
            rows = self._packed[safe, 0]
        else:  # the rows' averages caught up on the folds they missed, read without writing
            state = self._packed[safe, :2]  # weights and average
            w = state[:, :, 0]
            factor = np.exp(self._log - self._row_log[safe]).astype(np.float32)[:, :, None]
            rows = w + (state[:, :, 1] - w) * factor
            if which == "now":
                rows += (1.0 - self._weight(self.folds + 1)) * (w - rows)
        if not every:
            rows *= valid[:, :, None]
        out = rows[:, 0] if rows.shape[1] == 1 else rows.sum(1, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(out)).to(self.device)

    # learning ------------------------------------------------------------------------------
    def fold(self) -> None:
        """One fold of the average (once per micro-batch, with the dense weights')."""
        if self.decay <= 0:
            return
        self.folds += 1
        self._log += math.log(self._weight(self.folds))

    def step(self, idx: np.ndarray, first_grad: torch.Tensor, lr: float) -> None:
        """Update the rows in ``idx`` from the gradient of the first layer's outputs.

        The touched rows' state is gathered once, updated in place (every intermediate in one
        of two scratch buffers, in the same order of operations as the plain expressions, so
        the same bits) and scattered back once."""
        n, s = idx.shape
        grad = first_grad.detach().cpu().numpy()
        flat = idx.reshape(-1)
        if s == 1 and n and int(flat.min()) >= 0:  # one category, no empty slot: no mask
            src, keys = grad, flat
        else:
            valid = flat >= 0
            if not valid.any():
                return
            src, keys = np.repeat(grad, s, axis=0)[valid], flat[valid]
        uniq, g = self._unique_sums(keys, src)
        state = self._packed[uniq]  # (u, k, width): weights, average, moments
        w = state[:, 0]
        u = len(uniq)
        if len(self._t1) < u:
            self._t1 = np.empty((u, self.width), np.float32)
            self._t2 = np.empty((u, self.width), np.float32)
        t1, t2 = self._t1[:u], self._t2[:u]
        if self.decay > 0:  # the average sees the weights as they were until now
            factor = np.exp(self._log - self._row_log[uniq]).astype(np.float32)[:, None]
            avg = state[:, 1]  # w + (avg - w) * factor
            avg -= w
            avg *= factor
            avg += w
            self._row_log[uniq] = self._log
        self.steps += 1
        if self._moments == 2:
            b1, b2 = self.betas
            mu, nu = state[:, -2], state[:, -1]
            mu *= b1  # mu = b1 mu + (1 - b1) g
            np.multiply(g, 1 - b1, out=t1)
            mu += t1
            nu *= b2  # nu = b2 nu + (1 - b2) g g
            np.multiply(g, 1 - b2, out=t1)
            t1 *= g
            nu += t1
            c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
            np.divide(nu, c2, out=t1)  # w -= (lr / c1) mu / (sqrt(nu / c2) + eps)
            np.sqrt(t1, out=t1)
            t1 += self.eps
            np.multiply(mu, lr / c1, out=t2)
            t2 /= t1
            w -= t2
        elif self._moments == 1:
            nu = state[:, -1]
            np.multiply(g, g, out=t1)  # nu += g g;  w -= lr g / (sqrt(nu) + 1e-10)
            nu += t1
            np.sqrt(nu, out=t1)
            t1 += 1e-10
            np.multiply(g, lr, out=t2)
            t2 /= t1
            w -= t2
        else:
            np.multiply(g, lr, out=t1)
            w -= t1
        self._packed[uniq] = state
        if not math.isfinite(float(w.sum())):
            self._finite = False

    def _unique_sums(self, keys: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct rows of ``keys``, the sum of ``src``'s lines per row), rows in any
        order. A scratch array indexed by row gives every key one position of
        the batch (the same for all its copies): distinct keys (the common case) are told
        apart without sorting; repeated ones are summed as sums of runs of their lines in
        event order (``np.add.reduceat``, the same sums as over sorted unique keys)."""
        pos = self._positions[: len(keys)]
        if len(pos) < len(keys):
            pos = self._positions = np.arange(len(keys), dtype=np.int64)
        self._slot[keys] = pos
        rep = self._slot[keys]
        first = rep == pos  # one line per distinct key
        if first.all():
            return keys, src
        group = (np.cumsum(first) - 1)[rep]
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0])
        return keys[first], np.add.reduceat(src[order], starts, axis=0)

    def reset_average(self, moments: bool = False) -> None:
        """Start the average again from the weights (drift alarm, rollback, adoption); with
        ``moments``, forget the optimizer's moments too."""
        if moments and self._moments:
            self._packed[:, self._k - self._moments :] = 0.0
        if self.decay > 0:
            self._packed[:, 1] = self._packed[:, 0]
        self._row_log[:] = 0.0
        self._log = 0.0
        self.folds = 0

    def repair(self) -> int:
        """Zero the rows (and their state) holding a non-finite weight; returns how many."""
        bad = ~np.isfinite(self.table).all(1)
        n = int(bad.sum())
        self._finite = True
        if n:
            self._packed[bad] = 0.0
        return n

    def is_finite(self) -> bool:
        """Every row finite: only rows a step writes can turn non-finite, and each step checks
        the rows it wrote (a sum over the whole table would cost more than the step)."""
        return self._finite

    def export(self) -> np.ndarray:
        """The served table (the average as the next fold leaves it), float32."""
        if self.decay <= 0:
            return self.table.copy()
        self._sync(np.arange(len(self._packed)))
        avg = self._packed[:, 1]
        return avg + (1.0 - self._weight(self.folds + 1)) * (self._packed[:, 0] - avg)

    # state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "packed": torch.from_numpy(self._packed.copy()),  # weights, average, moments
            "row_log": torch.from_numpy(self._row_log.copy()),
            "log": self._log,
            "folds": self.folds,
            "steps": self.steps,
            "vocabulary": self.vocab.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        packed = np.asarray(state["packed"], np.float32)
        if packed.shape != self._packed.shape:
            raise ValueError(
                f"embedding state of shape {packed.shape}, expected {self._packed.shape}"
            )
        self._packed[...] = packed
        self._row_log[:] = np.asarray(state["row_log"], np.float64)
        self._log = float(state["log"])
        self.folds = int(state["folds"])
        self.steps = int(state["steps"])
        self.vocab.load_state_dict(state["vocabulary"])
        self._finite = bool(np.isfinite(self.table).all())
