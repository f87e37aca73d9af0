"""Typed requests as the served network's inputs: imputed numbers and each event's sum of rows.

A typed model is served as a dense network whose first layer takes the numeric columns and
then the sum of the event's category rows (daemon/learning/typed_learning.py). This object
holds what turns an encoded row into those inputs: the layout, the vocabulary as it was when
the copy was frozen (never extended while serving) and the table of rows (the average of the
weights, as predicted with). numpy only.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
>>> from learnd.daemon.learning.vocabulary import Vocabulary
>>> lay = FeatureLayout.of({"x": FeatureSpec(type="number", missing="impute"),
...                         "c": FeatureSpec(type="category", vocabulary=1, buckets=2)})
>>> table = np.arange(8, dtype=np.float32).reshape(4, 2)  # missing, 1 learned, 2 buckets
>>> t = TypedInputs(lay, Vocabulary(lay), table)
>>> t.encode(np.array([[np.nan, 1.0, 5.0]], np.float32), np.array([3.0, 0.5, 0, 0])).tolist()
[[3.0, 1.0, 6.0, 7.0]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
from learnd.daemon.learning.vocabulary import Vocabulary


@dataclass(frozen=True, slots=True)
class TypedInputs:
    layout: FeatureLayout
    vocabulary: Vocabulary
    table: np.ndarray  # (rows, width) float32

    def __post_init__(self) -> None:
        table = np.array(self.table, np.float32, copy=True)
        table.flags.writeable = False
        object.__setattr__(self, "table", table)

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    def problem(self) -> str | None:
        """Why the table cannot serve the layout (None when it can)."""
        if self.table.ndim != 2 or self.table.shape[0] != self.layout.n_rows:
            return f"an embedding table of shape {self.table.shape} for {self.layout.n_rows} rows"
        return None

    def encode(self, X: np.ndarray, x_mean: np.ndarray) -> np.ndarray:
        """Encoded rows ``(n, dim)`` as the network's inputs ``(n, n_numeric + width)``."""
        X = np.asarray(X, np.float32)
        n_num = self.layout.n_numeric
        if len(X) == 1 and self.layout.dim == n_num + 1:
            return self._encode_one(X, x_mean, n_num)
        idx = self.vocabulary.rows(X[:, n_num:], add=False)
        out = np.empty((len(X), n_num + self.width), np.float32)
        num = out[:, :n_num]
        num[...] = X[:, :n_num]
        missing = np.isnan(num)
        if missing.any():
            np.copyto(num, np.broadcast_to(x_mean[:n_num], num.shape), where=missing)
        if idx.shape[1] == 1 and idx.min() >= 0:  # one category: its row
            out[:, n_num:] = self.table[idx[:, 0]]
            return out
        rows = self.table[np.maximum(idx, 0)]
        rows *= (idx >= 0)[:, :, None]
        out[:, n_num:] = rows.sum(1, dtype=np.float32)
        return out

    def _encode_one(self, X: np.ndarray, x_mean: np.ndarray, n_num: int) -> np.ndarray:
        """:meth:`encode` of one event with one category (a served request): the same values
        in a third of the numpy calls (the key looked up and the numbers checked in Python)."""
        values = X[0].tolist()
        (row,) = self.vocabulary.row_list(values[n_num:])
        num = X[0, :n_num]
        if any(v != v for v in values[:n_num]):  # NaN: imputed
            num = num.copy()
            np.copyto(num, x_mean[:n_num], where=np.isnan(num))
        if row < 0:  # no value: row 0 times 0, as the batch path has it
            return np.concatenate((num, self.table[0] * np.float32(0)))[None]
        return np.concatenate((num, self.table[row]))[None]

    def state(self) -> dict[str, Any]:
        return {
            "layout": self.layout.describe(),
            "vocabulary": self.vocabulary.state_dict(),
            "table": np.array(self.table, np.float32),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TypedInputs:
        specs = {str(k): FeatureSpec(**dict(v)) for k, v in dict(state["layout"]).items()}
        layout = FeatureLayout.of(specs)
        vocab = Vocabulary(layout)
        vocab.load_state_dict(
            {
                k: np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.int64)
                for k, v in dict(state["vocabulary"]).items()
            }
        )
        table = state["table"]
        return cls(layout, vocab, np.asarray(table.numpy() if hasattr(table, "numpy") else table))
