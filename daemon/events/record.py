"""A record as it came from the log, before any validation: what the core reads of one.

Examples
--------
>>> from learnd.daemon.events.record import Record
>>> Record("events", 0, 7, b'{"id": 1}').offset
7
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RawRecord(Protocol):
    """What the core reads of a raw record. kafka-python's ``ConsumerRecord`` has this shape,
    so a source hands its records over as they are, without a copy per record."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One raw record as it came from the log, before any validation (a :class:`RawRecord`)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # ms since the epoch, as Kafka gives it
