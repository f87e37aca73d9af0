"""The core's ports: small protocols that adapters implement (and in-memory fakes imitate).

The core never opens a connection or a file; it is handed objects of these shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from learnd.daemon.events.record import RawRecord

if TYPE_CHECKING:
    import torch

    from learnd.daemon.events.decoder import Decoded


class EventSource(Protocol):
    """Where labelled events come from (Kafka in production, a list in tests)."""

    def poll(self, timeout_s: float) -> Sequence[RawRecord] | Decoded:
        """Records in log order per partition; empty when none arrived within the timeout.
        A source that decodes where it reads (in another process) hands over ``Decoded``."""
        ...

    def seek(self, positions: Mapping[int, int]) -> None:
        """Continue each partition from the given next offset (from a checkpoint)."""
        ...

    def commit(self, positions: Mapping[int, int]) -> None:
        """Record progress for monitoring; positions are next offsets per partition."""
        ...

    def lag(self) -> Mapping[int, int]:
        """Records behind the end of the log, per assigned partition (never negative)."""
        ...

    def assigned(self) -> int:
        """How many partitions this consumer holds now (0 while a group join is pending)."""
        ...

    def take_revoked(self) -> bool:
        """True once after partitions were revoked by a rebalance (then False until the next)."""
        ...

    def on_revoke(self, handler: Callable[[], Mapping[int, int] | None]) -> None:
        """Register what to do *before* revoked partitions are handed over: the source calls
        ``handler`` from inside :meth:`poll` (so the caller's thread is not touching the model)
        and commits the positions it returns (None: nothing to commit)."""
        ...

    def connected(self) -> bool:
        """False while no broker connection is up (the source keeps retrying by itself)."""
        ...

    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """Where rejected records go, with their reason and original bytes."""

    truncated: int  # dead letters sent without all of their key and value (too large)
    dropped: int  # dead letters refused for their size even without key and value

    def send(self, record: RawRecord, reason: str, detail: str) -> None: ...

    def flush(self) -> None:
        """Block until everything sent is durable; raise if it cannot be made so."""
        ...


class CheckpointStore(Protocol):
    """Durable storage of the learner's state together with the source positions it reflects."""

    def save(self, state: Mapping[str, Any]) -> str:
        """Write atomically; return an identifier of the written checkpoint."""
        ...

    def load_latest(self) -> Mapping[str, Any] | None:
        """The newest readable checkpoint, or None when there is none."""
        ...


class Clock(Protocol):
    def __call__(self) -> float:
        """Monotonic seconds."""
        ...


class RoundFailed(RuntimeError):
    """A parameter round did not complete: a peer was later than the round's deadline, or gone."""


class StateAverager(Protocol):
    """The element-wise mean of one float64 vector over every learner of a group: a collective
    (``all_reduce``), so every learner calls it with a vector of the same size, in the same
    order, and every learner gets the same result bit for bit.
    daemon/learning/parameter_round.py calls it twice a round."""

    @property
    def size(self) -> int:
        """The number of learners in the group."""
        ...

    @property
    def rank(self) -> int:
        """This learner's place in the group, ``0 <= rank < size``: it assigns partitions."""
        ...

    def mean(self, vector: torch.Tensor) -> torch.Tensor:
        """The mean of ``vector`` over the group (a new CPU tensor; ``vector`` is unchanged).
        Raises :class:`RoundFailed` when the group does not complete within the deadline."""
        ...

    def close(self) -> None: ...
