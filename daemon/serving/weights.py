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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from learnd.daemon.serving.typed_inputs import TypedInputs


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
    typed: TypedInputs | None = None  # typed features: how a request becomes the inputs

    def shape_problem(self, n_outputs: int) -> str | None:
        """Why these arrays cannot be one network from ``len(x_mean)`` inputs to ``n_outputs``
        outputs (None when they can)."""
        if not self.weights or len(self.weights) != len(self.biases):
            return f"{len(self.weights)} weight matrices for {len(self.biases)} bias vectors"
        width = len(self.x_mean)
        if self.x_inv_std.shape != (width,):
            return f"input scaling of shapes {self.x_mean.shape} and {self.x_inv_std.shape}"
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                return f"layer {i}: weights {w.shape} and bias {b.shape} after width {width}"
            width = w.shape[1]
        if width != n_outputs:
            return f"the network ends in {width} outputs; the task needs {n_outputs}"
        if self.typed is not None:
            return self.typed.problem()
        return None

    def is_finite(self) -> bool:
        arrays = (*self.weights, *self.biases, self.x_mean, self.x_inv_std)
        if self.typed is not None:
            arrays += (self.typed.table,)
        return all(bool(np.isfinite(a).all()) for a in arrays) and math.isfinite(
            self.y_mean * self.y_std
        )
