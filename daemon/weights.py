"""The served copy of a model's weights: plain float32 numpy arrays, no torch.

Examples
--------
>>> import numpy as np
>>> w = DenseWeights((np.ones((2, 1), np.float32),), (np.zeros(1, np.float32),), "relu",
...                  np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 1.0)
>>> w.is_finite()
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DenseWeights:
    """A detached float32 copy of the model and its input/target scaling, for serving."""

    weights: tuple[np.ndarray, ...]  # each (in, out)
    biases: tuple[np.ndarray, ...]
    activation: str
    x_mean: np.ndarray
    x_inv_std: np.ndarray
    y_mean: float
    y_std: float

    def is_finite(self) -> bool:
        arrays = (*self.weights, *self.biases, self.x_mean, self.x_inv_std)
        return all(bool(np.isfinite(a).all()) for a in arrays) and math.isfinite(
            self.y_mean * self.y_std
        )
