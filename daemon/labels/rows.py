"""The join's unlabelled events of one poll as rows: decoded once, where they were read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Unlabelled:
    """Unlabelled events of one poll, decoded for the join: their ids and feature rows, where
    each was read, and its value (dead-lettered if its id came already). Arrays, cheap to pickle:
    the consumer process hands them over as they are (:meth:`learnd.daemon.labels.records.JoinDecoder.decode`)."""

    topic: str
    ids: tuple[Any, ...]
    X: np.ndarray  # (n, dim) float32
    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    raw: tuple[bytes | None, ...]

    def __len__(self) -> int:
        return len(self.ids)
