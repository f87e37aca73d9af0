"""Rolling prequential metrics over the last ``window`` events.

Examples
--------
>>> import numpy as np
>>> m = RollingMetrics("binary", window=4)
>>> m.update(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
>>> m.accuracy, round(m.log_loss, 4)
(0.5, 0.8574)
"""

from __future__ import annotations

import numpy as np


class _Ring:
    """A fixed-size window of floats with an O(1) mean."""

    def __init__(self, size: int):
        self.buf = np.zeros(size, np.float64)
        self.pos = 0
        self.full = False

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)[-len(self.buf) :]
        n, size = len(values), len(self.buf)
        end = self.pos + n
        if end <= size:
            self.buf[self.pos : end] = values
        else:
            first = size - self.pos
            self.buf[self.pos :] = values[:first]
            self.buf[: n - first] = values[first:]
        self.full = self.full or end >= size
        self.pos = end % size

    def __len__(self) -> int:
        return len(self.buf) if self.full else self.pos

    def mean(self) -> float:
        n = len(self)
        return float(self.buf[:n].mean()) if n else float("nan")


class RollingMetrics:
    """Accuracy and log-loss (classification) or MAE and RMSE (regression), windowed."""

    def __init__(self, task: str, window: int = 1000):
        self.task = task
        self.window = window
        self.seen = 0
        self._a = _Ring(window)  # correct (0/1)  or absolute error
        self._b = _Ring(window)  # log-loss        or squared error

    def update(self, outputs: np.ndarray, y: np.ndarray) -> None:
        if len(y) == 0:
            return
        self.seen += len(y)
        if self.task == "regression":
            err = np.asarray(outputs, np.float64) - y
            self._a.extend(np.abs(err))
            self._b.extend(err * err)
            return
        idx = np.asarray(y, np.int64)
        self._a.extend(outputs.argmax(axis=1) == idx)
        p = np.clip(outputs[np.arange(len(idx)), idx], 1e-15, 1.0)
        self._b.extend(-np.log(p))

    @property
    def accuracy(self) -> float:
        return self._a.mean() if self.task != "regression" else float("nan")

    @property
    def log_loss(self) -> float:
        return self._b.mean() if self.task != "regression" else float("nan")

    @property
    def mae(self) -> float:
        return self._a.mean() if self.task == "regression" else float("nan")

    @property
    def rmse(self) -> float:
        return float(np.sqrt(self._b.mean())) if self.task == "regression" else float("nan")

    def summary(self) -> dict[str, float]:
        if self.task == "regression":
            return {"mae": self.mae, "rmse": self.rmse}
        return {"accuracy": self.accuracy, "log_loss": self.log_loss}
