"""Typed features: the [schema.features] table, the typed decoder and the stable category keys."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from learnd.daemon.config import LearndConfig, SchemaConfig
from learnd.daemon.config_schema import MISSING_KEY, NO_KEY
from learnd.daemon.events.decoder import EventDecoder, Reason
from learnd.daemon.events.record import Record
from learnd.daemon.events.typed import category_key, count_missing

FEATURES = {
    "amount": "number",
    "n_prev": {"type": "number", "missing": "impute"},
    "price": {"type": "number", "strings": True},
    "is_new": "boolean",
    "country": "category",
    "merchant": {"type": "category", "buckets": 262144, "vocabulary": 0},
    "tags": {"type": "tokens", "max_tokens": 3},
}


def schema() -> SchemaConfig:
    return SchemaConfig(task="binary", features=FEATURES)


def decode(*events: dict | bytes):
    dec = EventDecoder(schema())
    recs = [
        Record("t", 0, i, e if isinstance(e, bytes) else orjson.dumps(e))
        for i, e in enumerate(events)
    ]
    return dec.decode_many(recs)


GOOD = {
    "amount": 12.5,
    "n_prev": 3,
    "price": "9.5",
    "is_new": True,
    "country": "DE",
    "merchant": 4711,
    "tags": ["a", "b"],
}


def test_a_typed_event_becomes_one_encoded_row():
    ok, bad = decode({"features": GOOD, "label": 1})
    assert bad == []
    k = [float(category_key(v)) for v in ("DE", "4711", "a", "b")]
    # amount, n_prev, n_prev.missing, price, is_new, country, merchant, tags x 3
    assert ok.X.tolist() == [[12.5, 3.0, 0.0, 9.5, 1.0, *k, NO_KEY]]


def test_missing_values_are_imputed_or_rejected_as_declared():
    event = dict(GOOD, n_prev=None)
    del event["country"], event["tags"]
    ok, bad = decode({"features": event, "label": 0})
    assert bad == []
    row = ok.X[0]
    assert math.isnan(row[1]) and row[2] == 1.0
    assert row[5] == MISSING_KEY and row[7] == MISSING_KEY and row[8] == NO_KEY
    assert count_missing(schema().layout, ok.X) == {
        "n_prev": 1,
        "country": 1,
        "merchant": 0,
        "tags": 1,
    }
    _, bad = decode({"features": dict(GOOD, amount=None), "label": 0})
    assert (bad[0].reason, bad[0].detail) == (Reason.MISSING_FIELD, "features.amount is missing")


@pytest.mark.parametrize(
    "feature, value, reason, detail",
    [
        ("amount", "12", Reason.WRONG_TYPE, "features.amount must be a number"),
        ("amount", True, Reason.WRONG_TYPE, "features.amount must be a number"),
        ("price", "x", Reason.WRONG_TYPE, "features.price must be a number or a numeric string"),
        ("price", "inf", Reason.NON_FINITE, "feature price is not finite"),
        ("is_new", "true", Reason.NOT_BOOLEAN, "features.is_new must be a boolean"),
        ("is_new", 2, Reason.NOT_BOOLEAN, "features.is_new must be a boolean"),
        ("country", 1.5, Reason.NOT_CATEGORY, "features.country must be a category"),
        ("country", True, Reason.NOT_CATEGORY, "features.country must be a category"),
        ("tags", "a", Reason.NOT_TOKENS, "features.tags must be tokens"),
        ("tags", ["a", 1.5], Reason.NOT_TOKENS, "features.tags must be tokens"),
        ("tags", ["a"] * 4, Reason.TOO_MANY_TOKENS, "features.tags has 4 tokens"),
    ],
)
def test_each_wrong_type_is_dead_lettered_naming_feature_and_type(feature, value, reason, detail):
    ok, bad = decode({"features": dict(GOOD, **{feature: value}), "label": 1})
    assert len(ok) == 0 and bad[0].reason == reason
    assert bad[0].detail.startswith(detail)


def test_booleans_take_zero_and_one_and_numbers_stay_strict_by_default():
    ok, bad = decode({"features": dict(GOOD, is_new=0), "label": 1})
    assert bad == [] and ok.X[0, 4] == 0.0


def test_the_key_of_a_value_is_the_same_in_another_process():
    code = (
        "from learnd.daemon.events.typed import category_key as k;"
        "print([k(v) for v in ('DE', 'merchant-17', 4711, 'é')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([category_key(v) for v in ("DE", "merchant-17", 4711, "é")])
    assert category_key("DE") == 16313817  # fixed: BLAKE2b, not the salted hash()


def test_start_up_errors_name_the_field_and_the_valid_values():
    with pytest.raises(ValidationError, match=r"schema.features.table.a.type[\s\S]*'tokens'"):
        LearndConfig(schema={"features": {"a": "text"}})
    with pytest.raises(ValidationError, match="'buckets' apply to types 'category' and 'tokens'"):
        LearndConfig(schema={"features": {"a": {"type": "number", "buckets": 8}}})
    with pytest.raises(ValidationError, match="'impute' or 'reject'"):
        LearndConfig(schema={"features": {"a": {"type": "category", "missing": "drop"}}})
    with pytest.raises(ValidationError, match="remove schema.n_features"):
        LearndConfig(schema={"features": {"a": "number"}, "n_features": 1})


def test_the_list_form_is_all_numbers_as_before():
    s = SchemaConfig(features=("a", "b"))
    assert s.layout is None and s.dim == 2 and s.feature_names == ("a", "b")


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=5),
    st.lists(st.one_of(st.text(max_size=3), st.integers(0, 9), st.floats(0, 1)), max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FEATURES)), _values), st.booleans())
def test_any_features_object_is_an_encoded_row_or_a_reason(features, extra):
    """Every object decodes to a row of the layout's width, with keys only where keys go and
    missing values exactly where they were absent, or to exactly one rejection."""
    if extra:
        features = dict(features, unknown="ignored")
    ok, bad = decode({"features": features, "label": 1})
    assert len(ok) + len(bad) == 1
    if bad:
        assert bad[0].reason in Reason and bad[0].detail
        return
    row = ok.X[0]
    assert row.shape == (schema().dim,)
    assert features.get("amount") is not None and features.get("is_new") is not None
    assert math.isnan(row[1]) == (features.get("n_prev") is None) == (row[2] == 1.0)
    keys = row[5:]
    assert np.isfinite(keys).all() and ((keys == NO_KEY) | (keys >= 0)).all()
    assert (row[5] == MISSING_KEY) == (features.get("country") is None)
    assert (keys[keys != NO_KEY] <= MISSING_KEY).all()
    assert float(keys.max()) == float(keys.max()) // 1  # integers, exact in float32


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_never_raise(data):
    ok, bad = decode(data)
    assert len(ok) + len(bad) == 1


def test_a_config_file_with_a_typed_table_and_an_unknown_option(tmp_path):
    from learnd.adapters.settings import ConfigError, build_config

    path = tmp_path / "learnd.toml"
    path.write_text(
        '[schema]\ntask = "binary"\n[schema.features]\namount = "number"\n'
        'merchant = { type = "category", buckets = 262144 }\n'
    )
    cfg = build_config(path, {}, [])
    assert cfg.schema_.layout is not None and cfg.schema_.layout.tables[0].buckets == 262144
    with pytest.raises(ConfigError, match=r"tags.sizes: unknown key; valid keys here: buckets"):
        build_config(path, {}, ['schema.features.tags={"type": "tokens", "sizes": 4}'])
