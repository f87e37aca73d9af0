"""The most recently learned examples, sampled uniformly for rehearsal steps.

While the learner keeps up with the stream it has compute to spare; spending it on extra
optimizer steps over recent examples ("replay", as in experience replay) gives a micro-batch
learner much of the accuracy that per-example learning has: on bench/quality.py's seven
streams (20k events) the mean prequential accuracy went from .892 to .916 with three replay
steps per batch, against .902 with four steps on the same batch. The learner empties its window
at a drift alarm and at a rollback, so that an old concept (or the data that broke the model)
is not rehearsed. The window and its generator are part of the checkpoint, so a restored
learner rehearses exactly what an uninterrupted one would have.

Examples
--------
>>> import numpy as np
>>> w = ReplayWindow(capacity=4, dim=1, seed=0)
>>> w.add(np.array([[1.0], [2.0], [3.0]], np.float32), np.array([0, 1, 0]))
>>> w.add(np.array([[4.0], [5.0]], np.float32), np.array([1, 1]))
>>> len(w), sorted(w.rows()[0][:, 0].tolist())
(4, [2.0, 3.0, 4.0, 5.0])
>>> X, y = w.sample(8)
>>> X.shape, set(X[:, 0].tolist()) <= {2.0, 3.0, 4.0, 5.0}
((8, 1), True)
"""

from __future__ import annotations

import numpy as np
import torch

from learnd.daemon.learning.replay_ring import ReplayRing


class ReplayWindow:
    """The last ``capacity`` examples in a :class:`~learnd.daemon.learning.replay_ring.ReplayRing`, one row each:
    the features, then the label (float64 holds float32 features, class indices, 0/1 and
    float32 regression targets exactly)."""

    def __init__(self, capacity: int, dim: int, seed: int = 0):
        self.capacity = max(capacity, 1)
        self.dim = dim
        self._ring = ReplayRing(self.capacity, dim + 1)
        self._n = 0  # valid rows: positions [0, n) (the ring fills from 0 before it wraps)
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self._n

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        rows = self._join(X, y)
        self._ring.extend(rows)
        self._n = min(self._n + len(rows), self.capacity)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` examples drawn uniformly, with replacement (the window must not be empty)."""
        idx = torch.randint(0, self._n, (n,), generator=self._gen).numpy()
        return self._split(self._ring.at(idx))

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Every example held, oldest first (copies)."""
        return self._split(self._ring.last(self._n))

    def _join(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        rows = np.empty((len(y), self.dim + 1), np.float64)
        rows[:, :-1] = X
        rows[:, -1] = y
        return rows

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rows[:, :-1].astype(np.float32), rows[:, -1].copy()

    def clear(self) -> None:
        self._ring.clear()
        self._n = 0

    def state_dict(self) -> dict:
        X, y = self._split(self._ring.at(np.arange(self._n)))  # the ring's own layout
        return {"X": X, "y": y, "head": self._ring.head, "generator": self._gen.get_state()}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore rows, ring position and generator; ``None`` (a checkpoint from before the
        window existed, or of another schema) leaves it empty.

        A window saved at another capacity (``learning.replay.window`` changed across a
        restart) keeps its newest rows, laid out oldest first: all of them in a larger window,
        the newest ``capacity`` in a smaller one. Only a window of the same size is restored
        position for position, which is what makes a restart draw exactly what an
        uninterrupted run would."""
        self.clear()
        if state is None:
            return
        X = np.asarray(state["X"], np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            return  # another schema: start empty
        rows = self._join(X, np.asarray(state["y"]))
        head = int(state["head"])
        n = len(rows)
        if n != self.capacity:
            # A ring that has not wrapped holds its rows oldest first with head == n; one that
            # has holds the oldest at head. Either way, rolled by head they are oldest first.
            if n:
                rows = np.roll(rows, -(head % n), axis=0)[-self.capacity :]
            head = len(rows)  # the next row goes after them (the ring takes it modulo)
        self._ring.restore(rows, head)
        self._n = len(rows)
        gen = state["generator"]
        self._gen.set_state(gen if torch.is_tensor(gen) else torch.as_tensor(gen))
