"""In-memory stand-ins for the real adapters, so the core can be tested without a broker."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import torch

from learnd.daemon.events.record import Record
from learnd.daemon.ports import RoundFailed


class ListSource:
    """An event source over an in-memory log: ``{partition: [bytes, ...]}``."""

    def __init__(self, topic: str = "events", batch: int = 500):
        self.topic = topic
        self.batch = batch
        self.log: dict[int, list[bytes | None]] = {}
        self.next: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.closed = False

    def append(self, values: Iterable[bytes | dict | None], partition: int = 0) -> None:
        part = self.log.setdefault(partition, [])
        self.next.setdefault(partition, 0)
        for v in values:
            part.append(orjson.dumps(v) if isinstance(v, dict) else v)

    def poll(self, timeout_s: float) -> Sequence[Record]:
        out: list[Record] = []
        for p, values in sorted(self.log.items()):
            start = self.next[p]
            chunk = values[start : start + self.batch]
            out += [Record(self.topic, p, start + i, v) for i, v in enumerate(chunk)]
            self.next[p] = start + len(chunk)
        return out

    def seek(self, positions: Mapping[int, int]) -> None:
        self.next.update(positions)

    def commit(self, positions: Mapping[int, int]) -> None:
        self.committed.update(positions)

    def lag(self) -> Mapping[int, int]:
        return {p: len(v) - self.next[p] for p, v in self.log.items()}

    def connected(self) -> bool:
        return True

    def take_revoked(self) -> bool:
        return False

    def on_revoke(self, handler) -> None:
        self.revoke_handler = handler

    def assigned(self) -> int:
        return len(self.log)

    def remaining(self) -> int:
        return sum(self.lag().values())

    def close(self) -> None:
        self.closed = True


class ListDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[Record, str, str]] = []
        self.flushed = 0
        self.truncated = 0
        self.dropped = 0

    def send(self, record: Record, reason: str, detail: str) -> None:
        self.sent.append((record, reason, detail))

    def flush(self) -> None:
        self.flushed = len(self.sent)


class MemoryCheckpointStore:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def save(self, state: Mapping[str, Any]) -> str:
        self.saved.append(dict(state))
        return f"mem-{len(self.saved)}"

    def load_latest(self) -> Mapping[str, Any] | None:
        return self.saved[-1] if self.saved else None


class ManualClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class InProcessGroup:
    """N learners in one process (one thread each) averaging through a barrier: the
    ``StateAverager`` of each is :meth:`member`. The mean is the sum in rank order over N."""

    def __init__(self, size: int, timeout_s: float = 60.0):
        self.size = size
        self.timeout_s = timeout_s
        self._slots: list[torch.Tensor | None] = [None] * size
        self._result: torch.Tensor | None = None
        self._barrier = threading.Barrier(size, action=self._reduce)
        self.reductions = 0

    def _reduce(self) -> None:
        slots = [s for s in self._slots if s is not None]
        if len(slots) != self.size or len({s.shape for s in slots}) != 1:
            raise ValueError(f"vectors of shapes {[tuple(s.shape) for s in slots]}")
        self._result = torch.stack(slots).sum(0) / self.size
        self.reductions += 1

    def member(self, rank: int) -> InProcessAverager:
        return InProcessAverager(self, rank)


class InProcessAverager:
    """One member of an :class:`InProcessGroup`."""

    def __init__(self, group: InProcessGroup, rank: int):
        self.group = group
        self.size = group.size
        self.rank = rank

    def mean(self, vector: torch.Tensor) -> torch.Tensor:
        g = self.group
        g._slots[self.rank] = vector.detach().to("cpu", torch.float64, copy=True)
        try:
            g._barrier.wait(g.timeout_s)
        except threading.BrokenBarrierError as e:
            raise RoundFailed(
                f"the group of {self.size} did not meet within {g.timeout_s} s"
            ) from e
        assert g._result is not None
        return g._result.clone()

    def close(self) -> None:
        self.group._barrier.abort()
