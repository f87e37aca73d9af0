"""Served accuracy: the predictions clients actually received, scored when their labels came.

Kept per served version (the newest ``keep`` versions). Classification: the share of served
predictions whose class (the highest of its scores, one per class) was the label. Regression: the
mean absolute error of the served value.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.labels.join import Served
>>> s = ServedAccuracy("binary")
>>> s.update(Served(3, np.array([0.1, 0.9])), 1); s.update(Served(3, np.array([0.8, 0.2])), 1)
>>> s.summary()
{3: {'n': 2, 'accuracy': 0.5}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from learnd.daemon.labels.join import Served


class ServedAccuracy:
    def __init__(self, task: str, keep: int = 16):
        self.task = task
        self.keep = keep
        self._n: dict[int, int] = {}
        self._score: dict[int, float] = {}  # correct predictions, or summed absolute error

    def update(self, served: Served, y: Any) -> None:
        v = served.version
        if v not in self._n:
            self._n[v], self._score[v] = 0, 0.0
            for old in sorted(self._n)[: max(0, len(self._n) - self.keep)]:
                del self._n[old], self._score[old]
        if v not in self._n:  # older than every version kept
            return
        s = served.scores
        if self.task == "regression":
            hit = abs(float(s[0]) - float(y))
        else:
            hit = float(int(np.argmax(s)) == int(y))
        self._n[v] += 1
        self._score[v] += hit

    def summary(self) -> dict[int, dict[str, float]]:
        """Per served version: how many predictions were scored, and their accuracy (or MAE)."""
        key = "mae" if self.task == "regression" else "accuracy"
        return {v: {"n": n, key: self._score[v] / n} for v, n in sorted(self._n.items()) if n > 0}

    def state_dict(self) -> dict[str, Any]:
        return {
            "n": {str(k): v for k, v in self._n.items()},
            "score": {str(k): v for k, v in self._score.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._n = {int(k): int(v) for k, v in state["n"].items()}
        self._score = {int(k): float(v) for k, v in state["score"].items()}
