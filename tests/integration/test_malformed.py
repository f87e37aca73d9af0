"""RELIABILITY test 12: 500 generated bad payloads plus random bytes, through Kafka.

The payloads are invalid *by construction* (hypothesis strategies that each break one rule), so
the expectation does not come from the decoder under test. Valid events with extra fields are
interleaved: every one of them must be learned, every bad one dead-lettered with a reason.
"""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learnd.daemon.events.decoder import Reason
from learnd.daemon.events.synthetic import DriftingSEA

from .conftest import wait_for
from .test_kafka_daemon import produce, read_topic

pytestmark = pytest.mark.integration

NUM = st.floats(-100, 100, allow_nan=False) | st.integers(-100, 100)
NOT_NUM = st.text(max_size=5) | st.booleans() | st.none() | st.lists(NUM, max_size=2)
GOOD_FEATURES = st.fixed_dictionaries({"x1": NUM, "x2": NUM, "x3": NUM})


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


bad_events = st.one_of(
    # a feature missing
    st.tuples(GOOD_FEATURES, st.sampled_from(["x1", "x2", "x3"])).map(
        lambda t: {"features": _without(t[0], t[1]), "label": 1}
    ),
    # a feature retyped
    st.tuples(
        GOOD_FEATURES, st.sampled_from(["x1", "x2", "x3"]), NOT_NUM.filter(lambda v: v is not None)
    ).map(lambda t: {"features": {**t[0], t[1]: t[2]}, "label": 0}),
    # the wrong dimension
    st.lists(NUM, min_size=0, max_size=8)
    .filter(lambda v: len(v) != 3)
    .map(lambda v: {"features": v, "label": 1}),
    # label missing, retyped or not a class
    GOOD_FEATURES.map(lambda f: {"features": f}),
    st.tuples(
        GOOD_FEATURES,
        st.text(min_size=1, max_size=4) | st.integers(2, 99) | st.lists(NUM, max_size=1),
    ).map(lambda t: {"features": t[0], "label": t[1]}),
    # not an object at all
    st.lists(NUM, max_size=3) | st.text(max_size=10) | NUM,
)
valid_with_extras = st.tuples(
    GOOD_FEATURES,
    st.sampled_from([0, 1]),
    st.dictionaries(st.sampled_from(["src", "note", "ver"]), st.text(max_size=5)),
).map(lambda t: {"features": t[0], "label": t[1], **t[2]})


def _collect(strategy, n, seed):
    out = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(value):
        out.append(value)

    draw()
    return out[:n]


def test_malformed_records_are_dead_lettered_and_nothing_valid_is_lost(start_daemon, kafka_section):
    bad = [orjson.dumps(v) for v in _collect(bad_events, 500, 1)]
    assert len(bad) == 500
    rng = random.Random(12)
    junk = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) for _ in range(100)]
    junk = [j for j in junk if not j.strip().startswith((b"{", b"["))]  # random bytes, not JSON
    extras = [orjson.dumps(v) for v in _collect(valid_with_extras, 100, 2)]
    plain = [orjson.dumps(e) for e in DriftingSEA(seed=71).take(400)]
    valid = extras + plain
    stream = bad + junk + valid
    random.Random(3).shuffle(stream)
    produce(kafka_section["bootstrap_servers"], kafka_section["topic"], stream, partitions=2)

    d = start_daemon()
    wait_for(lambda: d.pipeline.learner.events_learned >= len(valid), 60, what="valid learned")
    letters = read_topic(
        kafka_section["bootstrap_servers"],
        kafka_section["dead_letter_topic"],
        len(bad) + len(junk),
        timeout_s=60,
    )
    d.stop()
    d.join(30)
    assert d.pipeline.learner.events_learned == len(valid), "every valid event, extra fields too"
    assert len(letters) == len(bad) + len(junk)
    reasons = {dict(r.headers)["learnd.reason"].decode() for r in letters}
    assert reasons <= {r.value for r in Reason} and len(reasons) >= 5
    assert sorted(r.value for r in letters) == sorted(bad + junk), "original bytes, each once"
    assert d.pipeline.positions == {0: len(stream) // 2 + len(stream) % 2, 1: len(stream) // 2}
