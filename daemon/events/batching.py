"""Micro-batching: group valid events into learning batches that flush on size or on age.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.events.decoder import EventBatch
>>> b = MicroBatcher(size=2, max_age_s=1.0)
>>> rows = EventBatch(np.zeros((3, 1), np.float32), np.zeros(3, np.float32), (1, 2, 3),
...                   np.zeros(3, np.int32), np.arange(3))
>>> b.add(rows, now=0.0)
>>> [len(x) for x in b.ready(now=0.0)]
[2]
>>> [len(x) for x in b.ready(now=0.5)], [len(x) for x in b.ready(now=1.0)]
([], [1])
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from learnd.daemon.events.decoder import EventBatch


class MicroBatcher:
    """FIFO of pending events; yields full batches at once and a partial one once it is old."""

    def __init__(self, size: int, max_age_s: float):
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.size = size
        self.max_age_s = max_age_s
        self._parts: list[EventBatch] = []
        self._pending = 0
        self._oldest: float | None = None

    def __len__(self) -> int:
        return self._pending

    def pending_by_partition(self) -> dict[int, int]:
        """Events waiting to be learned, per partition."""
        if not self._parts:
            return {}
        parts, counts = np.unique(
            np.concatenate([b.partitions for b in self._parts]), return_counts=True
        )
        return {int(p): int(n) for p, n in zip(parts, counts, strict=True)}

    def add(self, events: EventBatch, now: float) -> None:
        if len(events) == 0:
            return
        if self._oldest is None:
            self._oldest = now
        self._parts.append(events)
        self._pending += len(events)

    def ready(self, now: float) -> Iterator[EventBatch]:
        """Full batches, then the partial remainder if it waited ``max_age_s`` or longer."""
        if self._pending >= self.size:
            merged = EventBatch.concat(self._parts)
            n_full = (len(merged) // self.size) * self.size
            for start in range(0, n_full, self.size):
                yield merged.slice(start, start + self.size)
            rest = merged.slice(n_full, len(merged))
            self._parts = [rest] if len(rest) else []
            self._pending = len(rest)
            self._oldest = now if len(rest) else None
        if self._pending and self._oldest is not None and now - self._oldest >= self.max_age_s:
            yield from self.drain()

    def drain(self) -> Iterator[EventBatch]:
        """Everything pending, as full batches and a final partial one."""
        if not self._pending:
            return
        merged = EventBatch.concat(self._parts)
        self._parts, self._pending, self._oldest = [], 0, None
        for start in range(0, len(merged), self.size):
            yield merged.slice(start, start + self.size)
