"""Decoding and validation of labelled events: bad input becomes a value, never an exception.

An event is a JSON object ``{"id": ..., "features": {name: number} | [numbers], "label": ...,
"ts": ...}``; ``id`` (a string or a number) and ``ts`` are optional and extra top-level fields are ignored.

Examples
--------
>>> from learnd.daemon.config import SchemaConfig
>>> from learnd.daemon.events.record import Record
>>> dec = EventDecoder(SchemaConfig(task="binary", features=("a", "b")))
>>> ok, bad = dec.decode_many([
...     Record("t", 0, 0, b'{"features": {"a": 1, "b": 2}, "label": 1}'),
...     Record("t", 0, 1, b'{"features": {"a": 1}, "label": 1}'),
... ])
>>> ok.X.tolist(), ok.y.tolist()
([[1.0, 2.0]], [1.0])
>>> str(bad[0].reason), bad[0].detail
('missing_field', 'features.b is missing')
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.reasons import Reason
from learnd.daemon.events.record import RawRecord
from learnd.daemon.events.typed import TypedParser

if TYPE_CHECKING:
    from learnd.daemon.labels.rows import Unlabelled

# An event's optional id: a string or a JSON number (the exactly-once audit counts the integers).
_ID_TYPES = frozenset((str, int, float))


@dataclass(frozen=True, slots=True)
class Rejection:
    record: RawRecord
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Valid events as arrays, in log order. ``y`` is float (binary, regression) or class index."""

    X: np.ndarray
    y: np.ndarray
    ids: tuple[Any, ...]
    partitions: np.ndarray
    offsets: np.ndarray
    raw: tuple[bytes | None, ...] = ()  # original record values, for dead-lettering later

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls, dim: int, y_dtype: type) -> EventBatch:
        return cls(
            np.empty((0, dim), np.float32),
            np.empty(0, y_dtype),
            (),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            (),
        )

    def slice(self, start: int, stop: int) -> EventBatch:
        return EventBatch(
            self.X[start:stop],
            self.y[start:stop],
            self.ids[start:stop],
            self.partitions[start:stop],
            self.offsets[start:stop],
            self.raw[start:stop],
        )

    @classmethod
    def concat(cls, parts: Sequence[EventBatch]) -> EventBatch:
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.X for p in parts]),
            np.concatenate([p.y for p in parts]),
            tuple(i for p in parts for i in p.ids),
            np.concatenate([p.partitions for p in parts]),
            np.concatenate([p.offsets for p in parts]),
            tuple(r for p in parts for r in p.raw),
        )


@dataclass(frozen=True, slots=True)
class Decoded:
    """Records decoded where they were read (the consumer process): the valid events, the
    rejections, and the next offset of each partition the records came from."""

    events: EventBatch
    rejections: list[Rejection]
    positions: dict[int, int]
    joined: tuple[RawRecord, ...] = ()  # records of the label join's topics, undecoded
    unlabelled: Unlabelled | None = None  # the label join's unlabelled events, decoded

    def __len__(self) -> int:
        n = len(self.events) + len(self.rejections) + len(self.joined)
        return n + (len(self.unlabelled) if self.unlabelled is not None else 0)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class FeatureParser:
    """Turns the ``features`` value of an event or a prediction request into a row of floats.

    Returns ``(row, None)`` or ``(None, (reason, detail))``; shared by training and serving so the
    two can never disagree on what a valid input is.
    """

    def __init__(self, schema: SchemaConfig):
        self.names = schema.feature_names
        self.dim = schema.dim
        self.max_abs = schema.max_abs_value

    def parse(self, features: Any) -> tuple[list[float] | None, tuple[Reason, str] | None]:
        if isinstance(features, list):
            if len(features) != self.dim:
                return None, (
                    Reason.WRONG_DIMENSION,
                    f"features has {len(features)} values, expected {self.dim}",
                )
            for i, v in enumerate(features):
                if not _is_number(v):
                    return None, (Reason.WRONG_TYPE, f"features[{i}] is not a number")
            row = features
        elif isinstance(features, dict):
            if self.names is None:
                return None, (
                    Reason.WRONG_TYPE,
                    f"features must be a list of {self.dim} numbers (schema has no feature names)",
                )
            row = []
            for name in self.names:
                v = features.get(name)
                if v is None:
                    return None, (Reason.MISSING_FIELD, f"features.{name} is missing")
                if not _is_number(v):
                    return None, (Reason.WRONG_TYPE, f"features.{name} is not a number")
                row.append(v)
        elif features is None:
            return None, (Reason.MISSING_FIELD, "features is missing")
        else:
            return None, (Reason.WRONG_TYPE, "features must be an object or a list of numbers")
        for i, v in enumerate(row):
            if not math.isfinite(v):
                return None, (Reason.NON_FINITE, f"feature {self._name(i)} is not finite")
            if abs(v) > self.max_abs:
                return None, (
                    Reason.OUT_OF_RANGE,
                    f"feature {self._name(i)} has magnitude above {self.max_abs:g}",
                )
        return row, None

    def _name(self, i: int) -> str:
        return self.names[i] if self.names is not None else str(i)


def feature_parser(schema: SchemaConfig) -> FeatureParser | TypedParser:
    """The parser of a schema's ``features``: typed for a ``[schema.features]`` table."""
    return TypedParser(schema) if schema.layout is not None else FeatureParser(schema)


class LabelParser:
    """Maps a JSON label to the learner's target: 0/1, a class index, or a float."""

    def __init__(self, schema: SchemaConfig):
        self.task = schema.task
        self.classes = schema.class_values
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.dtype: type = np.int64 if schema.task == "multiclass" else np.float32
        self.max_abs = schema.max_abs_value

    def parse(self, label: Any) -> tuple[float | int | None, tuple[Reason, str] | None]:
        if label is None:
            return None, (Reason.MISSING_FIELD, "label is missing")
        if self.task == "regression":
            if not _is_number(label):
                return None, (Reason.WRONG_TYPE, "label must be a number for task regression")
            if not math.isfinite(label):
                return None, (Reason.NON_FINITE, "label is not finite")
            if abs(label) > self.max_abs:
                return None, (Reason.OUT_OF_RANGE, f"label has magnitude above {self.max_abs:g}")
            return float(label), None
        if isinstance(label, bool):
            label = int(label)
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if not isinstance(label, (int, str)):
            return None, (Reason.WRONG_TYPE, "label must be a string or an integer")
        idx = self.index.get(label)
        if idx is None:
            shown = ", ".join(repr(c) for c in self.classes[:10])
            more = ", ..." if len(self.classes) > 10 else ""
            return None, (Reason.UNKNOWN_CLASS, f"label {label!r} is not one of {shown}{more}")
        return idx, None


class EventDecoder:
    """Splits raw records into an :class:`EventBatch` of valid events and a list of rejections."""

    def __init__(self, schema: SchemaConfig):
        self.schema = schema
        self.features: FeatureParser | TypedParser = feature_parser(schema)
        self.labels = LabelParser(schema)
        self.typed = schema.layout is not None
        names = schema.feature_names
        self._by_name: Callable[[dict], Any] | None
        if names is None:
            self._by_name = None
        elif len(names) == 1:
            only = names[0]
            self._by_name = lambda d: (d[only],)
        else:
            self._by_name = operator.itemgetter(*names)

    def decode_many(self, records: Sequence[RawRecord]) -> tuple[EventBatch, list[Rejection]]:
        """Valid events in log order, and a rejection for each invalid record.

        A batch of well-formed records takes a fast path (one JSON parse per record, then type,
        range and label checks on the whole batch); a batch holding anything else is decoded
        record by record, which is what defines every rejection and its reason.
        """
        fast = self._decode_fast(records)
        return fast if fast is not None else self._decode_each(records)

    def decode(self, records: Sequence[RawRecord]) -> Decoded:
        """:meth:`decode_many`, with the next offset of each partition after ``records``."""
        events, rejections = self.decode_many(records)
        return Decoded(events, rejections, {r.partition: r.offset + 1 for r in records})

    def _decode_fast(self, records: Sequence[RawRecord]) -> tuple[EventBatch, list] | None:
        if not records or self.typed:  # typed features: record by record
            return None
        loads, dim, by_name = orjson.loads, self.schema.dim, self._by_name
        regression = self.labels.task == "regression"
        index = self.labels.index
        rows: list[Any] = []
        ys: list[Any] = []
        ids: list[Any] = []
        try:
            for rec in records:
                obj = loads(rec.value)  # type: ignore[arg-type]  # None: TypeError, below
                if type(obj) is not dict:
                    return None
                feats = obj.get("features")
                if type(feats) is list:
                    if len(feats) != dim:
                        return None
                    rows.append(feats)
                elif type(feats) is dict and by_name is not None:
                    rows.append(by_name(feats))  # KeyError: missing
                else:
                    return None
                label = obj.get("label")
                if regression:
                    if type(label) is not float and type(label) is not int:
                        return None
                    ys.append(label)
                else:
                    # equal keys hash alike, so True and 1.0 find class 1, as parse() maps them
                    y = index.get(label)  # type: ignore[arg-type]  # TypeError: unhashable
                    if y is None:
                        return None
                    ys.append(y)
                eid = obj.get("id")
                if eid is not None and type(eid) not in _ID_TYPES:
                    return None
                ids.append(eid)
            # bool is an int to numpy: only plain numbers may pass
            if not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
                return None
            X = np.array(rows, dtype=np.float64)
            y_arr: np.ndarray = np.array(ys, dtype=np.float64 if regression else self.labels.dtype)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            return None
        if not (np.abs(X) <= self.features.max_abs).all():
            return None
        if regression and not (np.abs(y_arr) <= self.labels.max_abs).all():
            return None
        batch = EventBatch(
            X.astype(np.float32),
            y_arr.astype(self.labels.dtype, copy=False),
            tuple(ids),
            np.fromiter((r.partition for r in records), np.int32, len(records)),
            np.fromiter((r.offset for r in records), np.int64, len(records)),
            tuple(r.value for r in records),
        )
        return batch, []

    def _decode_each(self, records: Sequence[RawRecord]) -> tuple[EventBatch, list[Rejection]]:
        rows: list[list[float]] = []
        ys: list[float | int] = []
        ids: list[Any] = []
        parts: list[int] = []
        offs: list[int] = []
        raws: list[bytes | None] = []
        rejected: list[Rejection] = []
        for rec in records:
            problem = self._decode_one(rec, rows, ys, ids)
            if problem is None:
                parts.append(rec.partition)
                offs.append(rec.offset)
                raws.append(rec.value)
            else:
                rejected.append(Rejection(rec, problem[0], problem[1]))
        if not rows:
            return EventBatch.empty(self.schema.dim, self.labels.dtype), rejected
        batch = EventBatch(
            np.asarray(rows, dtype=np.float32),
            np.asarray(ys, dtype=self.labels.dtype),
            tuple(ids),
            np.asarray(parts, dtype=np.int32),
            np.asarray(offs, dtype=np.int64),
            tuple(raws),
        )
        return batch, rejected

    def _decode_one(
        self, rec: RawRecord, rows: list, ys: list, ids: list
    ) -> tuple[Reason, str] | None:
        if rec.value is None:
            return Reason.EMPTY, "record value is null (a tombstone)"
        if not rec.value:
            return Reason.EMPTY, "record value is empty"
        try:
            obj = orjson.loads(rec.value)
        except orjson.JSONDecodeError as e:
            # A number like 1e999 is valid JSON grammar but overflows a double: say so.
            if "infinity" in str(e):
                return Reason.NON_FINITE, f"a number overflows to infinity: {e}"[:200]
            return Reason.NOT_JSON, f"not valid JSON: {e}"[:200]
        if not isinstance(obj, dict):
            return Reason.NOT_OBJECT, f"event must be a JSON object, got {type(obj).__name__}"
        eid = obj.get("id")
        if eid is not None and type(eid) not in _ID_TYPES:  # bool is no id (an int subclass)
            return Reason.WRONG_TYPE, "id must be a string or a number"
        row, problem = self.features.parse(obj.get("features"))
        if problem is not None:
            return problem
        y, problem = self.labels.parse(obj.get("label"))
        if problem is not None:
            return problem
        rows.append(row)
        ys.append(y)
        ids.append(eid)
        return None
