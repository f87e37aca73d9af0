"""A ring of the most recent rows: the recent inputs a drift detector is rebuilt from on
restore (river's ADWIN is an opaque native object, so it is replayed rather than saved), and
the storage of the learner's rehearsal window (daemon/learning/replay_window.py).

Examples
--------
>>> import numpy as np
>>> ring = ReplayRing(capacity=3)
>>> ring.extend(np.array([[1.0], [2.0]]))
>>> ring.extend(np.array([[3.0], [4.0]]))
>>> ring.last(3)[:, 0].tolist(), ring.last(0).shape
([2.0, 3.0, 4.0], (0, 1))
"""

from __future__ import annotations

import numpy as np


class ReplayRing:
    """The last ``capacity`` rows of ``width`` floats; read back oldest first. Callers keep how
    many of the newest rows still count (those since their detector's last alarm)."""

    def __init__(self, capacity: int, width: int = 1):
        self._rows = np.zeros((max(capacity, 1), width), np.float64)
        self._head = 0  # where the next row goes

    def extend(self, rows: np.ndarray) -> None:
        size = len(self._rows)
        rows = rows[-size:]
        n = len(rows)
        first = min(n, size - self._head)
        self._rows[self._head : self._head + first] = rows[:first]
        self._rows[: n - first] = rows[first:]
        self._head = (self._head + n) % size

    def last(self, n: int) -> np.ndarray:
        """The newest ``n`` rows (at most the capacity), oldest first, as a copy."""
        n = min(n, len(self._rows))
        return np.roll(self._rows, -self._head, axis=0)[len(self._rows) - n :]

    @property
    def head(self) -> int:
        """The position the next row goes to (before the ring first wraps: the rows written)."""
        return self._head

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The rows at these ring positions, as a copy."""
        return self._rows[positions]

    def restore(self, rows: np.ndarray, head: int) -> None:
        """Put ``rows`` back at positions ``0...`` with the next row going to ``head``: the
        layout :meth:`at` and :attr:`head` describe."""
        self.clear()
        self._rows[: len(rows)] = rows
        self._head = head % len(self._rows)

    def clear(self) -> None:
        self._rows[:] = 0.0
        self._head = 0
