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
"""

from __future__ import annotations

from typing import Any

import orjson

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.decoder import LabelParser, Reason, feature_parser
from learnd.daemon.events.record import RawRecord

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
        self.features = feature_parser(schema)
        self.labels = LabelParser(schema)
        # a served row's scores: one per class (in schema order), or the regression value
        self.n_scores = 1 if schema.task == "regression" else len(schema.class_values)

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

    def prediction(self, rec: RawRecord) -> tuple[Any, ...]:
        """``(id, row, version, scores)`` for a record of the prediction log, else
        ``(reason, detail)``. Its features, as the client sent them, are parsed again here."""
        obj = _object(rec.value)
        if obj is None:
            return Reason.NOT_JSON, "a prediction record must be a JSON object"
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


def _object(value: bytes | None) -> dict | None:
    if not value:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
