"""RELIABILITY test 19: hostile records through a real broker.

Tombstones (null values, with and without a key), null keys, keys and values of 1 MiB and more
(past what a Kafka producer sends by default; the embedded broker takes them), headers, invalid
UTF-8, JSON nested 10,000 deep, an empty value: interleaved with valid events. Each hostile
record's fate is decided here, by construction, not by the decoder under test. Every valid one
must be learned, every other dead-lettered once with its reason and source, too-large ones
truncated with headers that say so, and every checkpoint must keep succeeding.
"""

from __future__ import annotations

import orjson
import pytest

from learnd.daemon.events.synthetic import DriftingSEA

from .conftest import wait_for
from .test_kafka_daemon import read_topic

pytestmark = pytest.mark.integration

confluent_kafka = pytest.importorskip("confluent_kafka")

MIB = 1 << 20
MAX_BYTES = 1_000_000  # kafka.dead_letter_max_bytes, the default
GOOD = list(DriftingSEA(seed=21).take(400))
PADDED = orjson.dumps({**GOOD[0], "pad": "p" * MIB})  # a valid event of over 1 MiB

# (key, value, headers, what must happen: "valid" or the rejection reason)
HOSTILE = [
    (None, None, None, "empty"),  # a tombstone without a key
    (b"gone", None, None, "empty"),  # a tombstone
    (None, b"{{{", None, "not_json"),
    (b"K" * (MIB + 1000), b"[1]", None, "not_object"),  # a huge key
    (None, b"x" * (MIB + 1000), None, "not_json"),  # a huge value
    (b"big", PADDED, None, "valid"),
    (None, b"\xff\xfe\xfa", None, "not_json"),  # invalid UTF-8
    (None, b'{"features": {"x1": "\xff"}, "label": 1}', None, "not_json"),
    (None, b"[" * 10_000 + b"]" * 10_000, None, "not_json"),  # nested 10,000 deep
    (None, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, None, "not_json"),
    (None, orjson.dumps(GOOD[1]), [("h", b"\x00\xff"), ("empty", None)], "valid"),
    (b"\xff\xfe", orjson.dumps(GOOD[2]), None, "valid"),  # a key that is not UTF-8
    (None, b"y" * (4 * MIB), [("h", b"v")], "not_json"),  # past Kafka's default limit
    (None, b"", None, "empty"),
]


def _produce(bootstrap: str, topic: str) -> dict[int, str]:
    """Produce valid events with the hostile records spread among them; returns what must
    happen to each record, by offset."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 8 * MIB, "linger.ms": 5}
    )
    fate: dict[int, str] = {}
    every = len(GOOD) // len(HOSTILE)
    hostile_after = {(j + 1) * every - 1: h for j, h in enumerate(HOSTILE)}
    records = []
    for i, event in enumerate(GOOD):
        records.append((None, orjson.dumps(event), None, "valid"))
        if i in hostile_after:
            records.append(hostile_after[i])
    assert len(records) == len(GOOD) + len(HOSTILE)

    def delivered(err, msg, want):
        assert err is None, err
        fate[msg.offset()] = want

    for key, value, headers, want in records:
        producer.produce(
            topic,
            value=value,
            key=key,
            headers=headers,
            partition=0,
            on_delivery=lambda err, msg, want=want: delivered(err, msg, want),
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert len(fate) == len(records)
    return fate


def test_hostile_records_are_learned_or_dead_lettered_exactly_and_checkpoints_go_on(
    start_daemon, kafka_section
):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    fate = _produce(bootstrap, topic)
    end = max(fate) + 1
    d = start_daemon(checkpoint={"every_s": 0.3})
    wait_for(lambda: d.pipeline.positions.get(0) == end, 60, what="every record consumed")
    health = d.service.health
    done = health.checkpoints
    wait_for(lambda: health.checkpoints >= done + 2, 30, what="two checkpoints after them all")

    valid = sum(want == "valid" for want in fate.values())
    invalid = {o: want for o, want in fate.items() if want != "valid"}
    assert health.checkpoint_failures == 0 and not health.checkpoint_failing
    assert d.pipeline.learner.events_learned == d.pipeline.valid == valid
    expected_reasons: dict[str, int] = {}
    for want in invalid.values():
        expected_reasons[want] = expected_reasons.get(want, 0) + 1
    assert dict(d.pipeline.rejected) == expected_reasons

    letters = read_topic(bootstrap, kafka_section["dead_letter_topic"], len(invalid), 60)
    assert len(letters) == len(invalid)  # once each: no letter re-sent by a retried flush
    seen = {}
    for letter in letters:
        h = {k: v for k, v in letter.headers}
        offset = int(h["learnd.source.offset"])
        assert h["learnd.source.topic"] == topic.encode()
        assert h["learnd.source.partition"] == b"0"
        assert h["learnd.reason"].decode() == invalid[offset]
        assert len(letter.key or b"") + len(letter.value or b"") <= MAX_BYTES
        seen[offset] = (letter, h)
    assert set(seen) == set(invalid)

    truncated = [o for o, (_, h) in seen.items() if h.get("learnd.truncated") == b"true"]
    assert len(truncated) == 3 == d.dead_letters.truncated  # the huge key and the 2 huge values
    for o in truncated:
        letter, h = seen[o]
        original = int(h["learnd.original.key_bytes"]) + int(h["learnd.original.value_bytes"])
        assert original > MAX_BYTES
    tombstones = [h.get("learnd.source.null") for _, h in seen.values()]
    assert sorted(filter(None, tombstones)) == [b"key,value", b"value"]
    assert d.dead_letters.dropped == 0
