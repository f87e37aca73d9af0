"""Decoding the join's records: unlabelled events (features and an ``id``, no label) and the
label topic's ``{"id": ..., "label": ..., "ts": ...}``. Bad input is a value, as in
:mod:`learnd.daemon.events.decoder`, whose feature and label parsers these reuse, so a joined
example is validated exactly as an inline labelled one.

Examples
--------
>>> from learnd.daemon.config import SchemaConfig
>>> from learnd.daemon.events.record import Record
>>> dec = JoinDecoder(SchemaConfig(task="binary", features=("a",)))
>>> dec.unlabelled(Record("t", 0, 0, b'{"id": 7, "features": {"a": 1.5}}'))
(7, [1.5])
>>> dec.unlabelled(Record("t", 0, 1, b'{"id": 7, "features": {"a": 1.5}, "label": 1}')) is None
True
>>> dec.label(Record("l", 0, 0, b'{"id": 7, "label": 1, "ts": 1.0}'))
(7, 1)
>>> dec.label(Record("l", 0, 1, b'{"label": 1}'))
(<Reason.MISSING_FIELD: 'missing_field'>, 'id is missing')
>>> got = dec.decode([Record("t", 0, 2, b'{"id": 8, "features": {"a": 2}}'),
...                   Record("t", 0, 3, b'{"features": {"a": 2}, "label": 0}')])
>>> got.unlabelled.ids, got.unlabelled.X.tolist(), got.events.ids, got.positions
((8,), [[2.0]], (None,), {0: 4})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.decoder import (
    Decoded,
    EventBatch,
    EventDecoder,
    LabelParser,
    Reason,
    Rejection,
    feature_parser,
)
from learnd.daemon.events.record import RawRecord
from learnd.daemon.labels.rows import Unlabelled

_ID_TYPES = (str, int, float)


def _id_problem(eid: Any, missing: str) -> tuple[Reason, str] | None:
    """Why ``eid`` is no usable id (``missing``: the detail when there is none), or None."""
    if eid is None:
        return Reason.MISSING_FIELD, missing
    if type(eid) not in _ID_TYPES:
        return Reason.WRONG_TYPE, "id must be a string or a number"
    return None


class JoinDecoder:
    def __init__(self, schema: SchemaConfig):
        self.events = EventDecoder(schema)
        self.dim = schema.dim
        self.features = feature_parser(schema)
        self.labels = LabelParser(schema)
        # a served row's scores: one per class (in schema order), or the regression value
        self.n_scores = 1 if schema.task == "regression" else len(schema.class_values)

    def decode(self, records: Sequence[RawRecord]) -> Decoded:
        """:meth:`EventDecoder.decode` for the join: labelled events as there, unlabelled ones
        decoded once into :class:`Unlabelled` rows (``Decoded.unlabelled``), every other record
        rejected as there. A poll of unlabelled events only (the usual one) is decoded in one
        pass; any other is decoded record by record, by the event decoder first."""
        positions = {r.partition: r.offset + 1 for r in records}
        fast = self._all_unlabelled(records)
        if fast is not None:
            empty = EventBatch.empty(self.dim, self.events.labels.dtype)
            return Decoded(empty, [], positions, unlabelled=self._rows(records, *fast))
        decoded = self.events.decode(records)
        rest: list[Rejection] = []
        taken: list[RawRecord] = []
        ids: list[Any] = []
        rows: list[Any] = []
        for r in decoded.rejections:
            got = self.unlabelled(r.record) if r.reason == Reason.MISSING_FIELD else None
            if got is None:
                rest.append(r)
            elif isinstance(got[0], Reason):
                rest.append(Rejection(r.record, got[0], got[1]))
            else:
                taken.append(r.record)
                ids.append(got[0])
                rows.append(got[1])
        unlabelled = self._rows(taken, ids, rows) if taken else None
        return Decoded(decoded.events, rest, positions, unlabelled=unlabelled)

    def _all_unlabelled(self, records: Sequence[RawRecord]) -> tuple[list, list] | None:
        """``(ids, rows)`` when every record is a valid unlabelled event, else None."""
        ids: list[Any] = []
        rows: list[Any] = []
        parse = self.features.parse
        for rec in records:
            obj = _object(rec.value)
            if obj is None or obj.get("label") is not None:
                return None
            eid = obj.get("id")
            if type(eid) not in _ID_TYPES:  # None too: an unlabelled event needs an id
                return None
            row, problem = parse(obj.get("features"))
            if problem is not None:
                return None
            ids.append(eid)
            rows.append(row)
        return (ids, rows) if ids else None

    def _rows(self, records: Sequence[RawRecord], ids: list, rows: list) -> Unlabelled:
        n = len(records)
        return Unlabelled(
            records[0].topic,
            tuple(ids),
            np.asarray(rows, np.float32).reshape(n, self.dim),
            np.fromiter((r.partition for r in records), np.int32, n),
            np.fromiter((r.offset for r in records), np.int64, n),
            tuple(r.value for r in records),
        )

    def unlabelled(self, rec: RawRecord) -> tuple[Any, Any] | tuple[Reason, str] | None:
        """``(id, row)`` for an unlabelled event; ``(reason, detail)`` for one whose features or
        id are bad; None when the record is not an unlabelled event (it has a label, or is no
        JSON object: the event decoder's rejection of it stands)."""
        obj = _object(rec.value)
        if obj is None or obj.get("label") is not None:
            return None
        eid = obj.get("id")
        bad = _id_problem(eid, "label is missing (an unlabelled event needs an id)")
        if bad is not None:
            return bad
        row, problem = self.features.parse(obj.get("features"))
        if problem is not None:
            return problem
        return eid, row

    def label(self, rec: RawRecord) -> tuple[Any, Any] | tuple[Reason, str]:
        """``(id, y)`` for a valid label record, else ``(reason, detail)``; ``y`` is the
        learner's target (a class index or a number), as for an inline label."""
        if not rec.value:
            return Reason.EMPTY, "record value is null or empty"
        obj = _object(rec.value)
        if obj is None:
            return Reason.NOT_JSON, "a label record must be a JSON object"
        eid = obj.get("id")
        bad = _id_problem(eid, "id is missing")
        if bad is not None:
            return bad
        y, problem = self.labels.parse(obj.get("label"))
        if problem is not None:
            return problem
        return eid, y

    def predictions(self, rec: RawRecord) -> list[tuple[Any, ...]]:
        """Each prediction of a record of the prediction log, in order: ``(id, row, version,
        scores, value)`` for a valid one, else ``(reason, detail, value)``, ``value`` being that
        prediction's own JSON. The serving processes write many predictions per record (a JSON
        array of prediction objects: one Kafka record per prediction cost the producer 37 us,
        one per 250 predictions 1.2 us each); a single object is one prediction. Each
        prediction's features, as the client sent them, are parsed again here."""
        value = rec.value
        obj = _json(value)
        if isinstance(obj, dict):
            return [self._prediction(obj) + (value,)]
        if isinstance(obj, list) and obj:
            return [
                (self._prediction(o) if isinstance(o, dict) else _NOT_PREDICTION)
                + (orjson.dumps(o),)
                for o in obj
            ]
        return [_NOT_PREDICTION + (value,)]

    def _prediction(self, obj: dict) -> tuple[Any, ...]:
        eid = obj.get("id")
        if type(eid) not in _ID_TYPES:
            return Reason.MISSING_FIELD, "id is missing or not a string or a number"
        row, problem = self.features.parse(obj.get("features"))
        if problem is not None:
            return problem
        version, scores = obj.get("version"), obj.get("scores")
        if type(version) is not int or version < 0:
            return Reason.WRONG_TYPE, "version must be a non-negative integer"
        if (
            type(scores) is not list
            or len(scores) != self.n_scores
            or not all(type(s) in (int, float) for s in scores)
        ):
            return Reason.WRONG_TYPE, f"scores must be a list of {self.n_scores} numbers"
        return eid, row, version, scores


_NOT_PREDICTION = (
    Reason.NOT_JSON,
    "a prediction record must be a JSON object or a non-empty array of them",
)


def _json(value: bytes | None) -> Any:
    """The JSON value of ``value``; None if it is empty or not JSON."""
    if not value:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _object(value: bytes | None) -> dict | None:
    obj = _json(value)
    return obj if isinstance(obj, dict) else None
