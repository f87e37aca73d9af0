"""Open Inference Protocol inputs for typed features: one named tensor per feature.

Each declared feature is one input named after it, of shape ``[batch]`` or ``[batch, 1]``
(``tokens``: ``[batch, k]``, an empty string an unused slot): numbers in any numeric datatype,
booleans as ``BOOL`` or numbers, categories as ``BYTES`` (strings) or integers. An input left
out is a missing value for every instance, with the feature's missing-value rule; each
instance is then checked and encoded by the same parser as the socket's ``predict``
(:class:`learnd.daemon.events.typed.TypedParser`), so the answer is the same.

Examples
--------
>>> from learnd.daemon.config import SchemaConfig
>>> from learnd.daemon.serving.oip import Tensor
>>> schema = SchemaConfig(task="binary", features={"amount": "number", "country": "category"})
>>> X = typed_rows(schema, [Tensor("amount", "FP32", (2,), np.array([1.0, 2.0])),
...                         Tensor("country", "BYTES", (2,), np.array(["DE", "FR"], object))])
>>> X.shape
(2, 2)
>>> typed_rows(schema, [Tensor("amount", "BYTES", (1,), np.array(["x"], object))])
'instances[0]: features.amount must be a number'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.decoder import feature_parser


def typed_rows(schema: SchemaConfig, inputs: Sequence[Any]) -> np.ndarray | str:
    """The encoded rows the named inputs (:class:`learnd.daemon.serving.oip.Tensor`)
    describe, or why not (the message of an ``invalid`` error)."""
    layout = schema.layout
    assert layout is not None
    kinds = {name: spec.type for name, spec in layout.specs}
    by_name = {t.name: t for t in inputs}
    unknown = sorted(set(by_name) - set(kinds))
    if unknown or len(by_name) != len(inputs):
        return (
            f"inputs {unknown or 'repeated'} are not features; send one input per feature"
            f" ({', '.join(kinds)})"
        )
    columns: dict[str, list[Any]] = {}
    batch = None
    for name, t in by_name.items():
        flat = t.data.reshape(-1)
        if kinds[name] == "tokens":
            if len(t.shape) != 2:
                return f"input {name!r} must have shape [batch, k]"
            rows = flat.reshape(t.shape)
            values = [[_value(v) for v in r if _value(v) != ""] for r in rows]
        else:
            if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
                return f"input {name!r} must have shape [batch] or [batch, 1]"
            values = [_value(v) for v in flat]
        if batch is not None and len(values) != batch:
            return "feature inputs must all have the same batch size"
        batch = len(values)
        columns[name] = values
    parser = feature_parser(schema)
    out = []
    for i in range(batch or 0):
        row, problem = parser.parse({name: col[i] for name, col in columns.items()})
        if problem is not None:
            return f"instances[{i}]: {problem[1]}"
        out.append(row)
    return np.asarray(out, np.float32).reshape(len(out), layout.dim)


def _value(v: Any) -> Any:
    """A tensor element as the JSON value the socket would carry."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v
