"""Online standardisation (running mean and variance, Chan et al.'s parallel update).

Examples
--------
>>> import numpy as np
>>> n = Standardizer(2)
>>> n.update_many(np.array([[1.0, 10.0], [3.0, 30.0]]))
>>> n.mean.tolist(), n.std.tolist()
([2.0, 20.0], [1.0, 10.0])
>>> n.transform(np.array([[3.0, 30.0]])).tolist()
[[1.0, 1.0]]

A column that has not varied yet carries no scale: it standardises to 0, whatever value comes
(as river's ``StandardScaler``), rather than to ``(x - mean) / sqrt(eps)``, which would turn the
first different value into an input of ~1e4:

>>> n = Standardizer(1)
>>> n.update_many(np.zeros((100, 1)))
>>> n.transform(np.array([[1.0]])).tolist()
[[0.0]]
"""

from __future__ import annotations

import numpy as np

# A column counts as constant while its variance is below this share of its squared mean: the
# rounding of the float64 running sums of a constant column, far below any variation a float32
# input can express (~6e-8 of the value).
CONSTANT_RTOL = 1e-12


class Standardizer:
    """Per-column running mean/variance in float64; ``transform`` returns float32."""

    def __init__(self, dim: int, eps: float = 1e-8):
        self.dim = dim
        self.eps = eps
        self.count = 0
        self.mean = np.zeros(dim, np.float64)
        self._m2 = np.zeros(dim, np.float64)

    @property
    def var(self) -> np.ndarray:
        if self.count < 2:
            return np.ones(self.dim, np.float64)
        return self._m2 / self.count

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def update_many(self, X: np.ndarray) -> None:
        n = len(X)
        if n == 0:
            return
        X = np.asarray(X, np.float64)
        b_mean = X.sum(axis=0) / n  # not X.mean(): its Python wrapper costs more than the sum
        d = X - b_mean
        b_m2 = np.einsum("ij,ij->j", d, d)
        total = self.count + n
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._m2 = self._m2 + b_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def scale(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, 1/std)`` as float32 arrays, for a serving copy; ``1/std`` is 0 for a
        column that has been constant so far."""
        var = self.var
        inv = 1.0 / np.sqrt(var + self.eps)
        if self.count >= 2:
            inv[var <= (CONSTANT_RTOL * self.mean) ** 2] = 0.0
        return self.mean.astype(np.float32), inv.astype(np.float32)

    def transform(self, X: np.ndarray) -> np.ndarray:
        mean, inv = self.scale()
        return ((np.asarray(X, np.float32) - mean) * inv).astype(np.float32, copy=False)

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean.copy(), "m2": self._m2.copy()}

    def load_state_dict(self, state: dict) -> None:
        mean = np.asarray(state["mean"], np.float64)
        if mean.shape != (self.dim,):
            raise ValueError(f"standardizer state has dim {mean.shape}, expected ({self.dim},)")
        self.count = int(state["count"])
        self.mean = mean.copy()
        self._m2 = np.asarray(state["m2"], np.float64).copy()
