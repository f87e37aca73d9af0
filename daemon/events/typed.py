"""Typed features: an event's ``features`` object as one encoded float32 row.

Shared by training and serving (as :class:`learnd.daemon.events.decoder.FeatureParser` is for
numbers), so the two can never disagree on what a valid input is or how it is encoded. The row's
layout is :class:`learnd.daemon.config_schema.FeatureLayout`'s.

A category value is a string or an integer (``5`` and ``"5"`` are the same value); its key is
the first 8 bytes of its BLAKE2b digest (``hashlib.blake2b``, digest size 8) modulo 2**24.
BLAKE2b is in the standard library, unsalted and fixed by RFC 7693, so a value has the same key
in every process, after every restart and on every machine (Python's own ``hash`` of a string
is salted per process). 24 bits keep the key exact in a float32 column; two values of one
feature share a key with probability about ``n**2 / 2**25`` for ``n`` distinct values, the
same effect as sharing a hashed bucket.

Examples
--------
>>> from learnd.daemon.config import SchemaConfig
>>> p = TypedParser(SchemaConfig(features={"amount": "number", "is_new": "boolean",
...                                        "country": "category"}))
>>> row, problem = p.parse({"amount": 12.5, "is_new": True, "country": "DE"})
>>> row[:2], row[2] == category_key("DE"), problem
([12.5, 1.0], True, None)
>>> p.parse({"amount": 12.5, "is_new": "yes", "country": "DE"})[1]
(<Reason.NOT_BOOLEAN: 'not_boolean'>, 'features.is_new must be a boolean (true, false, 0 or 1)')
>>> category_key("DE")  # the same in every process
16313817
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

from learnd.daemon.config import SchemaConfig
from learnd.daemon.config_schema import KEY_SPACE, MISSING_KEY, NO_KEY, FeatureLayout
from learnd.daemon.events.reasons import Reason

Problem = tuple[Reason, str]


@functools.lru_cache(maxsize=1 << 16)
def category_key(value: str | int) -> int:
    """The stable key of a category value, below 2**24 (the last 65,536 values met are
    remembered: a served or decoded stream repeats its frequent values)."""
    data = (value if isinstance(value, str) else str(value)).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "little") % KEY_SPACE


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_category(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


class TypedParser:
    """``parse(features)`` returns ``(row, None)`` or ``(None, (reason, detail))``."""

    def __init__(self, schema: SchemaConfig):
        layout = schema.layout
        if layout is None:
            raise ValueError("TypedParser needs a [schema.features] table")
        self.layout: FeatureLayout = layout
        self.dim = layout.dim
        self.max_abs = schema.max_abs_value
        self._steps = tuple(
            (name, spec.type, spec.imputes, spec.strings, spec.n_tokens)
            for name, spec in layout.specs
        )

    def parse(self, features: Any) -> tuple[list[float] | None, Problem | None]:
        if features is None:
            return None, (Reason.MISSING_FIELD, "features is missing")
        if not isinstance(features, dict):
            return None, (Reason.WRONG_TYPE, "features must be an object of the declared features")
        numeric: list[float] = []
        keys: list[float] = []
        max_abs = self.max_abs
        for name, kind, imputes, strings, n_tokens in self._steps:
            v = features.get(name)
            if v is None:
                if not imputes:
                    return None, (Reason.MISSING_FIELD, f"features.{name} is missing")
                if kind in ("number", "boolean"):
                    numeric += (math.nan, 1.0)
                elif kind == "category":
                    keys.append(MISSING_KEY)
                else:
                    keys += [MISSING_KEY] + [NO_KEY] * (n_tokens - 1)
                continue
            if kind == "number":
                if type(v) is float and -max_abs <= v <= max_abs:  # finite (NaN fails both)
                    numeric.append(v)
                else:
                    x, problem = self._number(name, v, strings)
                    if problem is not None:
                        return None, problem
                    numeric.append(x)
            elif kind == "boolean":
                if v is True or v is False or (_is_number(v) and v in (0, 1)):
                    numeric.append(float(v))
                else:
                    detail = f"features.{name} must be a boolean (true, false, 0 or 1)"
                    return None, (Reason.NOT_BOOLEAN, detail)
            elif kind == "category":
                if not _is_category(v):
                    detail = f"features.{name} must be a category (a string or an integer)"
                    return None, (Reason.NOT_CATEGORY, detail)
                keys.append(float(category_key(v)))
                continue
            else:
                if not isinstance(v, list) or not all(_is_category(t) for t in v):
                    detail = f"features.{name} must be tokens (a list of strings or integers)"
                    return None, (Reason.NOT_TOKENS, detail)
                if len(v) > n_tokens:
                    detail = f"features.{name} has {len(v)} tokens, at most {n_tokens} allowed"
                    return None, (Reason.TOO_MANY_TOKENS, detail)
                keys += [float(category_key(t)) for t in v] + [NO_KEY] * (n_tokens - len(v))
                continue
            if imputes:
                numeric.append(0.0)
        return numeric + keys, None

    def _number(self, name: str, v: Any, strings: bool) -> tuple[float, Problem | None]:
        if strings and isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                detail = f"features.{name} must be a number or a numeric string, got {v[:40]!r}"
                return 0.0, (Reason.WRONG_TYPE, detail)
        elif not _is_number(v):
            expected = "a number or a numeric string" if strings else "a number"
            return 0.0, (Reason.WRONG_TYPE, f"features.{name} must be {expected}")
        if not math.isfinite(v):
            return 0.0, (Reason.NON_FINITE, f"feature {name} is not finite")
        if abs(v) > self.max_abs:
            detail = f"feature {name} has magnitude above {self.max_abs:g}"
            return 0.0, (Reason.OUT_OF_RANGE, detail)
        return float(v), None


def count_missing(layout: FeatureLayout, X: Any) -> dict[str, int]:
    """Missing values per declared feature in a batch of encoded rows (imputing features
    only: a rejected missing value never reaches a row)."""
    import numpy as np

    out: dict[str, int] = {}
    col = 0
    for name, spec in layout.specs:
        if spec.type in ("number", "boolean"):
            if spec.imputes:
                out[name] = int(np.count_nonzero(X[:, col + 1] == 1.0))
                col += 1
            col += 1
    for t in layout.tables:
        out[t.name] = int(np.count_nonzero(X[:, t.columns[0]] == MISSING_KEY))
    return out
