from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.decoder import EventDecoder, Reason
from learnd.daemon.events.record import Record

NAMED = SchemaConfig(task="binary", features=("a", "b", "c"))


def rec(value, offset=0):
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return Record("events", 0, offset, raw)


def decode_one(value, schema=NAMED):
    ok, bad = EventDecoder(schema).decode_many([rec(value)])
    return ok, bad


GOOD = {"id": "e1", "features": {"a": 1, "b": 2.5, "c": -3}, "label": 1, "ts": 1700000000}


def test_valid_event_becomes_a_row():
    ok, bad = decode_one(GOOD)
    assert bad == []
    assert ok.X.tolist() == [[1.0, 2.5, -3.0]] and ok.y.tolist() == [1.0] and ok.ids == ("e1",)


def test_extra_top_level_fields_and_extra_features_are_accepted():
    ok, bad = decode_one({**GOOD, "source": "web", "features": {**GOOD["features"], "d": 9}})
    assert bad == [] and ok.X.shape == (1, 3)


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (None, Reason.EMPTY, "record value is null (a tombstone)"),
        (b"", Reason.EMPTY, "record value is empty"),
        (b"{not json", Reason.NOT_JSON, "not valid JSON"),
        (b"\xff\xfe\x00", Reason.NOT_JSON, "not valid JSON"),
        (b"NaN", Reason.NOT_JSON, "not valid JSON"),
        ([1, 2, 3], Reason.NOT_OBJECT, "got list"),
        ({"label": 1}, Reason.MISSING_FIELD, "features is missing"),
        ({"features": {"a": 1, "b": 2}, "label": 1}, Reason.MISSING_FIELD, "features.c is missing"),
        ({"features": {"a": 1, "b": 2, "c": 3}}, Reason.MISSING_FIELD, "label is missing"),
        (
            {"features": {"a": 1, "b": "2", "c": 3}, "label": 1},
            Reason.WRONG_TYPE,
            "features.b is not a number",
        ),
        (
            {"features": {"a": 1, "b": True, "c": 3}, "label": 1},
            Reason.WRONG_TYPE,
            "features.b is not a number",
        ),
        ({"features": "abc", "label": 1}, Reason.WRONG_TYPE, "features must be an object"),
        (
            {"features": [1, 2], "label": 1},
            Reason.WRONG_DIMENSION,
            "features has 2 values, expected 3",
        ),
        ({"features": [1, 2, 3, 4], "label": 1}, Reason.WRONG_DIMENSION, "expected 3"),
        (b'{"features": [1, 2, 1e999], "label": 1}', Reason.NON_FINITE, "overflows to infinity"),
        (b'{"features": [1, 2, 3], "label": -1e999}', Reason.NON_FINITE, "overflows to infinity"),
        ({"features": [1, 2, 1e38], "label": 1}, Reason.OUT_OF_RANGE, "magnitude above"),
        ({"features": [1, 2, 3], "label": 2}, Reason.UNKNOWN_CLASS, "label 2 is not one of 0, 1"),
        ({"features": [1, 2, 3], "label": "yes"}, Reason.UNKNOWN_CLASS, "not one of"),
        ({"features": [1, 2, 3], "label": [1]}, Reason.WRONG_TYPE, "label must be"),
        ({"features": [1, 2, 3], "label": 1, "id": {"x": 1}}, Reason.WRONG_TYPE, "id must be"),
    ],
)
def test_each_kind_of_bad_event_is_rejected_with_its_reason(value, reason, detail):
    ok, bad = decode_one(value)
    assert len(ok) == 0
    assert [(b.reason, detail in b.detail) for b in bad] == [(reason, True)], bad[0].detail


def test_non_finite_regression_label_is_rejected():
    reg = SchemaConfig(task="regression", n_features=1)
    ok, bad = EventDecoder(reg).decode_many([rec(b'{"features": [1], "label": -1e999}')])
    assert [b.reason for b in bad] == [Reason.NON_FINITE]


def test_multiclass_and_regression_labels():
    mc = SchemaConfig(task="multiclass", n_features=1, classes=("cat", "dog", 3))
    ok, bad = EventDecoder(mc).decode_many(
        [
            rec({"features": [0], "label": lab}, i)
            for i, lab in enumerate(["dog", 3, 3.0, "3", "cow"])
        ]
    )
    assert ok.y.tolist() == [1, 2, 2] and ok.y.dtype == np.int64
    assert [b.reason for b in bad] == [Reason.UNKNOWN_CLASS, Reason.UNKNOWN_CLASS]
    reg = SchemaConfig(task="regression", n_features=1)
    ok, bad = EventDecoder(reg).decode_many(
        [rec({"features": [0], "label": v}, i) for i, v in enumerate([1.5, -2, "1", True])]
    )
    assert ok.y.tolist() == [1.5, -2.0]
    assert [b.reason for b in bad] == [Reason.WRONG_TYPE, Reason.WRONG_TYPE]


def test_binary_accepts_booleans_and_named_classes():
    ok, _ = decode_one({"features": [1, 2, 3], "label": True})
    assert ok.y.tolist() == [1.0]
    named = SchemaConfig(task="binary", n_features=1, classes=("ham", "spam"))
    ok, bad = EventDecoder(named).decode_many([rec({"features": [1], "label": "spam"})])
    assert ok.y.tolist() == [1.0] and bad == []


def test_positions_follow_records_in_order():
    recs = [rec(GOOD, 0), rec(b"junk", 1), rec(GOOD, 2)]
    ok, bad = EventDecoder(NAMED).decode_many(recs)
    assert ok.offsets.tolist() == [0, 2] and bad[0].record.offset == 1


json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=4),
    max_leaves=12,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "features": json_values
        | st.lists(st.floats() | st.integers(), min_size=3, max_size=3)
        | st.fixed_dictionaries({k: st.floats() | st.integers() | json_scalars for k in "abc"}),
        "label": json_values | st.sampled_from([0, 1, True, False, 0.0, 1.0]),
        "extra": json_values,
    },
)


@settings(max_examples=500, deadline=None)
@given(events)
def test_any_json_object_is_either_accepted_or_rejected_with_a_reason(event):
    try:
        raw = orjson.dumps(event)
    except (TypeError, orjson.JSONEncodeError):
        raw = repr(event).encode()
    ok, bad = EventDecoder(NAMED).decode_many([rec(raw)])
    assert len(ok) + len(bad) == 1
    if len(ok):
        assert np.isfinite(ok.X).all() and ok.X.shape == (1, 3)
    else:
        assert bad[0].reason in Reason and bad[0].detail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(raw):
    ok, bad = EventDecoder(NAMED).decode_many([rec(raw)])
    assert len(ok) + len(bad) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=32, min_value=-1e6, max_value=1e6),
        min_size=3,
        max_size=3,
    ),
    st.sampled_from([0, 1]),
)
def test_valid_features_round_trip_exactly_in_float32(values, label):
    ok, bad = decode_one({"features": values, "label": label})
    assert bad == [] and ok.X[0].tolist() == [float(np.float32(v)) for v in values]
    assert all(math.isfinite(v) for v in ok.X[0])


def _same(a, b):
    (ok_a, bad_a), (ok_b, bad_b) = a, b
    assert ok_a.X.dtype == ok_b.X.dtype and ok_a.y.dtype == ok_b.y.dtype
    assert ok_a.X.tolist() == ok_b.X.tolist() and ok_a.y.tolist() == ok_b.y.tolist()
    assert ok_a.ids == ok_b.ids and ok_a.raw == ok_b.raw
    assert ok_a.offsets.tolist() == ok_b.offsets.tolist()
    assert ok_a.partitions.tolist() == ok_b.partitions.tolist()
    assert [(r.record.offset, r.reason, r.detail) for r in bad_a] == [
        (r.record.offset, r.reason, r.detail) for r in bad_b
    ]


valid_events = st.fixed_dictionaries(
    {
        "features": st.lists(
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e16, max_value=1e16)
            | st.integers(-(10**16), 10**16)
            | st.just(True),
            min_size=3,
            max_size=3,
        )
        | st.fixed_dictionaries({k: st.floats(-1e3, 1e3) | st.integers(-9, 9) for k in "abc"}),
        "label": st.sampled_from([0, 1, True, False, 0.0, 1.0]),
    },
    optional={"id": st.none() | st.integers() | st.text(max_size=3) | st.booleans()},
)
MULTI = SchemaConfig(task="multiclass", n_features=3, classes=("a", 2, "c"))
REGRESSION = SchemaConfig(task="regression", features=("a", "b", "c"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(valid_events, max_size=12) | st.lists(valid_events | events, max_size=12),
    st.sampled_from([NAMED, MULTI, REGRESSION]),
    st.data(),
)
def test_the_batch_fast_path_decides_exactly_as_record_by_record(evs, schema, data):
    """Whatever a batch holds, decode_many (fast when it can) and the record-by-record path
    give the same events, positions and rejections with the same reasons."""
    if schema is not NAMED:
        labels = st.sampled_from(["a", 2, 2.0, "c", True, "b", -1.5, 1e300, 3, 0.5])
        evs = [{**e, "label": data.draw(labels)} if "label" in e else e for e in evs]
    raws = []
    for e in evs:
        try:
            raws.append(orjson.dumps(e))
        except (TypeError, orjson.JSONEncodeError):
            raws.append(repr(e).encode())
    recs = [Record("events", i % 2, i, raw) for i, raw in enumerate(raws)]
    dec = EventDecoder(schema)
    _same(dec.decode_many(recs), dec._decode_each(recs))


def test_a_batch_of_valid_events_takes_the_fast_path(monkeypatch):
    dec = EventDecoder(NAMED)

    def not_here(records):
        raise AssertionError("the record-by-record path ran for a valid batch")

    monkeypatch.setattr(dec, "_decode_each", not_here)
    ok, bad = dec.decode_many([rec(GOOD, i) for i in range(100)] + [rec({**GOOD, "id": 7}, 100)])
    assert bad == [] and len(ok) == 101 and ok.offsets.tolist() == list(range(101))


@pytest.mark.parametrize("value", [True, None, "1", [1]])
def test_a_non_number_feature_in_a_batch_is_still_rejected(value):
    """bool is an int to numpy, so the fast path must not take True for 1.0."""
    recs = [rec(GOOD, 0), rec({**GOOD, "features": [1, value, 3]}, 1), rec(GOOD, 2)]
    ok, bad = EventDecoder(NAMED).decode_many(recs)
    assert ok.offsets.tolist() == [0, 2]
    assert [(b.record.offset, b.reason) for b in bad] == [(1, Reason.WRONG_TYPE)]


def test_a_regression_label_beyond_float32_is_rejected():
    """1e300 is finite in Python but not in the float32 the learner trains on."""
    reg = SchemaConfig(task="regression", n_features=1)
    ok, bad = EventDecoder(reg).decode_many(
        [rec({"features": [1], "label": 1e300}, 0), rec({"features": [1], "label": 2.5}, 1)]
    )
    assert ok.y.tolist() == [2.5]
    assert [b.reason for b in bad] == [Reason.OUT_OF_RANGE]


@pytest.mark.parametrize("with_a_bad_record", [False, True], ids=["fast path", "one by one"])
def test_ids_may_be_strings_or_any_number(with_a_bad_record):
    ids = ["e1", 7, 12.0, 3.5, -2]
    records = [rec({**GOOD, "id": i}, k) for k, i in enumerate(ids)]
    if with_a_bad_record:
        records.append(rec(b"not json", len(records)))
    ok, bad = EventDecoder(NAMED).decode_many(records)
    assert ok.ids == tuple(ids)
    assert len(bad) == int(with_a_bad_record)


@pytest.mark.parametrize("eid", [True, [1], {"n": 1}])
def test_an_id_that_is_no_string_or_number_is_rejected(eid):
    ok, bad = decode_one({**GOOD, "id": eid})
    assert len(ok) == 0 and [b.reason for b in bad] == [Reason.WRONG_TYPE]
    assert bad[0].detail == "id must be a string or a number"
