"""Category frequencies as series for the input-drift monitor.

A category feature has no mean to watch; its distribution over values is what shifts. Each
category feature becomes ``TRACKED + 1`` series of batch *shares*: the share of the batch
taken by each of its ``TRACKED`` most frequent values of the first batch it was seen in
(``NAME=top1`` .. ``NAME=top3``), and the share of everything else, missing included
(``NAME=other``). A share is the batch mean of a 0/1 indicator, so the monitor's detectors
(ADWIN over batch means) watch it exactly as they watch a number: the cost is a few array
operations per category per batch, whatever the number of distinct values, and the metric's
label set stays bounded (four series per category).

Mass moving between the tracked values, or between them and the rest, is seen; a change among
the "other" values alone (one rare value replacing another) is not. The tracked values are
the keys of the encoded row (the stable hash), kept in the monitor's state, so a restart
watches the same values.

Examples
--------
>>> import numpy as np
>>> shares = CategoryShares((("country", 0),))
>>> shares.names
('country=top1', 'country=top2', 'country=top3', 'country=other')
>>> X = np.array([[7.0], [7.0], [5.0], [9.0], [7.0], [5.0], [3.0], [1.0]], np.float32)
>>> shares.shares(X).tolist()  # 7, then 5, then 9 (the earliest of the ones seen once)
[0.375, 0.25, 0.125, 0.25]
"""

from __future__ import annotations

import numpy as np

TRACKED = 3  # values watched apart per category feature


class CategoryShares:
    def __init__(self, columns: tuple[tuple[str, int], ...]):
        """``columns``: each category feature's name and key column in the encoded row."""
        self.columns = tuple(columns)
        self.names = tuple(
            f"{name}={part}"
            for name, _ in self.columns
            for part in (*(f"top{i + 1}" for i in range(TRACKED)), "other")
        )
        self.tracked: list[np.ndarray | None] = [None] * len(self.columns)

    def shares(self, X: np.ndarray) -> np.ndarray:
        """This batch's shares, ``len(names)`` of them (the first batch picks the values)."""
        out = np.empty(len(self.names))
        for i, (_, col) in enumerate(self.columns):
            keys = np.asarray(X[:, col])
            top = self.tracked[i]
            if top is None:
                top = self.tracked[i] = self._pick(keys)
            hits = keys[:, None] == top[None, :]  # NaN (an unused key) matches nothing
            part = hits.mean(axis=0) if len(keys) else np.zeros(TRACKED)
            row = out[i * (TRACKED + 1) : (i + 1) * (TRACKED + 1)]
            row[:TRACKED] = part
            row[TRACKED] = 1.0 - part.sum()
        return out

    @staticmethod
    def _pick(keys: np.ndarray) -> np.ndarray:
        """The batch's most frequent keys, ties broken by first appearance; a batch with fewer
        distinct values leaves the rest unmatched (NaN)."""
        values, first, counts = np.unique(keys, return_index=True, return_counts=True)
        order = np.lexsort((first, -counts))[:TRACKED]
        top = np.full(TRACKED, np.nan)
        top[: len(order)] = values[order]
        return top

    def state_dict(self) -> dict:
        return {
            "columns": [list(c) for c in self.columns],
            "tracked": [None if t is None else t.tolist() for t in self.tracked],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the tracked values; a state for other features restores nothing."""
        if [tuple(c) for c in state["columns"]] != list(self.columns):
            return
        self.tracked = [None if t is None else np.asarray(t, np.float64) for t in state["tracked"]]
