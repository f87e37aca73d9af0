"""Why a record was rejected: a closed set, used as a metric label and documented one by one
(docs/protocol.md, "Dead-letter reasons")."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record was rejected. A closed set: it is used as a metric label."""

    EMPTY = "empty"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    WRONG_DIMENSION = "wrong_dimension"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CLASS = "unknown_class"
    LEARN_FAILED = "learn_failed"
    NOT_BOOLEAN = "not_boolean"
    NOT_CATEGORY = "not_category"
    NOT_TOKENS = "not_tokens"
    TOO_MANY_TOKENS = "too_many_tokens"
