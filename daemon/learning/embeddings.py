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

Examples
--------
>>> import numpy as np, torch
>>> from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
>>> lay = FeatureLayout.of({"c": FeatureSpec(type="category", vocabulary=2, buckets=4)})
>>> emb = Embeddings(lay, width=3, optimizer="adam", decay=0.5)
>>> idx = emb.rows(np.array([[7.0], [9.0]], np.float32), add=True)
>>> emb.step(idx, torch.ones(2, 3), lr=0.1)
>>> emb.table[1:3, 0].tolist(), float(emb.table[3:].abs().sum())  # two rows moved, no other
([-0.10000000149011612, -0.10000000149011612], 0.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from learnd.daemon.config_schema import FeatureLayout
from learnd.daemon.learning.averaging import WARMUP
from learnd.daemon.learning.vocabulary import Vocabulary


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
        n = layout.n_rows
        moments = 2 if optimizer in ("adam", "adamw") else 1 if optimizer == "adagrad" else 0
        # One tensor holds each row's weights, average and moments side by side, so that a
        # step reads and writes a row's whole state with one gather and one scatter.
        k = 1 + (decay > 0) + moments
        self._packed = torch.zeros(n, k, width, device=device)
        self.table = self._packed[:, 0]
        self.avg = self._packed[:, 1] if decay > 0 else None
        self._m = [self._packed[:, k - moments + i] for i in range(moments)]
        self._row_log = torch.zeros(n, dtype=torch.float64, device=device)
        self._log = 0.0  # sum of log d over the folds since the last reset
        self.folds = 0
        self.steps = 0
        self._finite = True  # every row written so far finite (checked on the rows a step wrote)

    # the encoded row -----------------------------------------------------------------------
    def split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(numeric columns, key columns) of encoded rows."""
        return X[:, : self.n_numeric], X[:, self.n_numeric :]

    def rows(self, K: np.ndarray, add: bool) -> torch.Tensor:
        return torch.from_numpy(self.vocab.rows(K, add)).to(self.table.device)

    # reading -------------------------------------------------------------------------------
    def _weight(self, n: int) -> float:
        return min(self.decay, (1 + n) / (WARMUP + n))

    def _sync(self, rows: torch.Tensor) -> None:
        """Bring the average of ``rows`` (unique) up to the last fold."""
        if self.avg is None:
            return
        factor = torch.exp(self._log - self._row_log[rows]).to(self.table.dtype).unsqueeze(1)
        w = self.table[rows]
        self.avg[rows] = w + (self.avg[rows] - w) * factor
        self._row_log[rows] = self._log

    def sum(self, idx: torch.Tensor, which: str) -> torch.Tensor:
        """Per event, the sum of its rows ``(n, width)``: of the weights (``"weights"``), of
        the average as of the last fold (``"avg"``) or as the next fold will leave it
        (``"now"``, what is exported)."""
        n, s = idx.shape
        valid = idx >= 0
        flat = idx.clamp(min=0).reshape(-1)
        if which == "weights" or self.avg is None:
            rows = self.table[flat]
        else:
            uniq = torch.unique(flat)
            self._sync(uniq)
            rows = self.avg[flat]
            if which == "now":
                rows = torch.lerp(rows, self.table[flat], 1.0 - self._weight(self.folds + 1))
        rows = rows.view(n, s, -1) * valid.unsqueeze(2).to(rows.dtype)
        return rows.sum(1)

    # learning ------------------------------------------------------------------------------
    def fold(self) -> None:
        """One fold of the average (once per micro-batch, with the dense weights')."""
        if self.avg is None:
            return
        self.folds += 1
        self._log += math.log(self._weight(self.folds))

    def step(self, idx: torch.Tensor, first_grad: torch.Tensor, lr: float) -> None:
        """Update the rows in ``idx`` from the gradient of the first layer's outputs."""
        n, s = idx.shape
        flat = idx.reshape(-1)
        if s == 1 and n and int(flat.min()) >= 0:  # one category, no empty slot: no mask
            src, keys = first_grad, flat
        else:
            valid = flat >= 0
            if not bool(valid.any()):
                return
            src, keys = first_grad.repeat_interleave(s, dim=0)[valid], flat[valid]
        uniq, inv = torch.unique(keys, return_inverse=True)
        g = torch.zeros(len(uniq), self.table.shape[1], dtype=src.dtype, device=src.device)
        g.index_add_(0, inv, src)
        state = self._packed[uniq]  # (u, k, width): weights, average, moments
        w = state[:, 0]
        if self.avg is not None:  # the average sees the weights as they were until now
            factor = torch.exp(self._log - self._row_log[uniq]).to(w.dtype).unsqueeze(1)
            state[:, 1] = w + (state[:, 1] - w) * factor
            self._row_log[uniq] = self._log
        self.steps += 1
        if self.optimizer in ("adam", "adamw"):
            b1, b2 = self.betas
            mu, nu = state[:, -2], state[:, -1]
            mu.mul_(b1).add_(g, alpha=1 - b1)
            nu.mul_(b2).addcmul_(g, g, value=1 - b2)
            c1, c2 = 1 - b1**self.steps, 1 - b2**self.steps
            w.addcdiv_(mu, (nu / c2).sqrt_().add_(self.eps), value=-lr / c1)
        elif self.optimizer == "adagrad":
            nu = state[:, -1]
            nu.addcmul_(g, g)
            w.addcdiv_(g, nu.sqrt().add_(1e-10), value=-lr)
        else:
            w.add_(g, alpha=-lr)
        self._packed[uniq] = state
        if not math.isfinite(float(w.sum())):
            self._finite = False

    def reset_average(self, moments: bool = False) -> None:
        """Start the average again from the weights (drift alarm, rollback, adoption); with
        ``moments``, forget the optimizer's moments too."""
        if moments:
            for t in self._m:
                t.zero_()
        if self.avg is not None:
            self.avg.copy_(self.table)
        self._row_log.zero_()
        self._log = 0.0
        self.folds = 0

    def repair(self) -> int:
        """Zero the rows (and their state) holding a non-finite weight; returns how many."""
        bad = ~torch.isfinite(self.table).all(1)
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
        """The served table (the average as the next fold leaves it), float32 numpy."""
        every = torch.arange(self.table.shape[0], device=self.table.device)
        if self.avg is None:
            return self.table.cpu().numpy().copy()
        self._sync(every)
        now = torch.lerp(self.avg, self.table, 1.0 - self._weight(self.folds + 1))
        return now.cpu().numpy()

    # state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "table": self.table.cpu().clone(),
            "moments": [t.cpu().clone() for t in self._m],
            "avg": self.avg.cpu().clone() if self.avg is not None else None,
            "row_log": self._row_log.cpu().clone(),
            "log": self._log,
            "folds": self.folds,
            "steps": self.steps,
            "vocabulary": self.vocab.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        table = torch.as_tensor(state["table"])
        if table.shape != self.table.shape:
            raise ValueError(f"embedding table {tuple(table.shape)}, expected {self.table.shape}")
        self.table.copy_(table)
        for t, s in zip(self._m, state["moments"], strict=False):
            t.copy_(torch.as_tensor(s))
        if self.avg is not None:
            if state["avg"] is None:
                self.avg.copy_(self.table)
            else:
                self.avg.copy_(torch.as_tensor(state["avg"]))
        self._row_log.copy_(torch.as_tensor(state["row_log"]))
        self._log = float(state["log"])
        self.folds = int(state["folds"])
        self.steps = int(state["steps"])
        self.vocab.load_state_dict(state["vocabulary"])
        self._finite = bool(torch.isfinite(self.table).all())
