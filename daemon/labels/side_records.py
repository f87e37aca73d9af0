"""The records of the join's own topics (the label topic and the prediction log) of one poll,
decoded into columns, so that the joiner takes the labels in one go
(:meth:`learnd.daemon.labels.join.Joiner.add_labels`), and the positions after them, which are
the join's (:class:`learnd.daemon.labels.stage.JoinStage`), checkpointed with the model.

Examples
--------
>>> from learnd.daemon.config import SchemaConfig
>>> from learnd.daemon.events.record import Record
>>> dec = JoinDecoder(SchemaConfig(task="binary", features=("a",)))
>>> side = decode_side(dec, [Record("lab", 1, 4, b'{"id": 7, "label": 1}'),
...                          Record("lab", 1, 5, b'{"label": 1}')], "lab")
>>> side.labels.ids, side.labels.y, [str(r.reason) for r in side.rejections], side.positions
((7,), [1], ['missing_field'], {'lab': {1: 6}})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learnd.daemon.events.decoder import Reason, Rejection
from learnd.daemon.events.record import RawRecord, Record
from learnd.daemon.labels.records import JoinDecoder


@dataclass(frozen=True, slots=True)
class Labels:
    """Valid label records: their ids and targets, where each was read, and its value."""

    topic: str
    ids: tuple[Any, ...]
    y: list[Any]
    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    raw: tuple[bytes | None, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, k: int) -> Record:
        return Record(self.topic, int(self.partitions[k]), int(self.offsets[k]), self.raw[k])


@dataclass(frozen=True, slots=True)
class SideRecords:
    """Valid labels, valid logged predictions ``(id, row, version, scores, record)``, the
    invalid records of both topics, and the next offset of each partition read, per topic."""

    labels: Labels | None
    predictions: list[tuple[Any, Any, int, list, Record]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    positions: dict[str, dict[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        n = len(self.predictions) + len(self.rejections)
        return n + (len(self.labels) if self.labels is not None else 0)


def decode_side(
    decoder: JoinDecoder, records: Sequence[RawRecord], labels_topic: str
) -> SideRecords:
    """Decode records of the label topic (``labels_topic``) and of the prediction log."""
    ids: list[Any] = []
    ys: list[Any] = []
    parts: list[int] = []
    offs: list[int] = []
    raws: list[bytes | None] = []
    predictions: list[tuple[Any, Any, int, list, Record]] = []
    bad: list[Rejection] = []
    positions: dict[str, dict[int, int]] = {}
    for rec in records:
        pos = positions.setdefault(rec.topic, {})
        pos[rec.partition] = max(pos.get(rec.partition, 0), rec.offset + 1)
        if rec.topic == labels_topic:
            got = decoder.label(rec)
            if isinstance(got[0], Reason):
                bad.append(Rejection(_plain(rec), got[0], got[1]))
                continue
            ids.append(got[0])
            ys.append(got[1])
            parts.append(rec.partition)
            offs.append(rec.offset)
            raws.append(rec.value)
            continue
        for pred in decoder.predictions(rec):
            one = Record(rec.topic, rec.partition, rec.offset, pred[-1], rec.key)
            if isinstance(pred[0], Reason):
                bad.append(Rejection(one, pred[0], pred[1]))
            else:
                eid, row, version, scores, _ = pred
                predictions.append((eid, row, version, scores, one))
    labels = None
    if ids:
        labels = Labels(
            labels_topic,
            tuple(ids),
            ys,
            np.asarray(parts, np.int32),
            np.asarray(offs, np.int64),
            tuple(raws),
        )
    return SideRecords(labels, predictions, bad, positions)


def _plain(r: RawRecord) -> Record:
    """A record as a plain :class:`Record` (a client's own may not pickle)."""
    return Record(r.topic, r.partition, r.offset, r.value, r.key)
