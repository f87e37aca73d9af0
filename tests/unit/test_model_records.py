"""The models topic's records: chunking and reassembly, the frame's checks, pin records, and a
replica's checks of whole snapshots (truncated, wrong schema, non-finite, bad checksum)."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from learnd.adapters.kafka.models_follower import ModelsFollower
from learnd.adapters.serving.shared_snapshots import encode
from learnd.daemon.config import KafkaConfig, SchemaConfig
from learnd.daemon.serving.model_records import (
    FORMAT,
    FRAME,
    KIND_PIN,
    Assembler,
    BadRecord,
    parse_pin,
    parse_record,
    pin_record,
    snapshot_records,
)
from learnd.daemon.serving.snapshot import Draft, Snapshot, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

SCHEMA = SchemaConfig(task="binary", features=("a", "b", "c"))


def snapshot(version: int, scale: float = 1.0, dim: int = 3, task: str = "binary") -> Snapshot:
    rng = np.random.default_rng(version)
    w = DenseWeights(
        (rng.normal(size=(dim, 8)).astype(np.float32) * scale, np.ones((8, 1), np.float32)),
        (np.zeros(8, np.float32), np.zeros(1, np.float32)),
        "relu",
        np.zeros(dim, np.float32),
        np.ones(dim, np.float32),
        0.0,
        1.0,
    )
    names = ("a", "b", "c") if dim == 3 else None
    classes = (0, 1) if task != "regression" else ()
    return Snapshot.from_draft(Draft(task, classes, names, w, 10 * version, {}), version)


def follower() -> ModelsFollower:
    ref = SnapshotRef()
    return ModelsFollower(KafkaConfig(models_topic="m"), SCHEMA, ref, consumer=object())


def test_a_snapshot_is_cut_into_chunks_of_at_most_chunk_bytes_and_framed():
    data = bytes(range(256)) * 40  # 10,240 bytes
    records = snapshot_records(9, data, chunk_bytes=4096)
    assert [k for k, _ in records] == [b"snapshot/9/0", b"snapshot/9/1", b"snapshot/9/2"]
    assert [len(v) - FRAME.size for _, v in records] == [4096, 4096, 2048]
    parsed = [parse_record(v) for _, v in records]
    assert [(r.version, r.index, r.count, r.total) for r in parsed] == [
        (9, 0, 3, 10240),
        (9, 1, 3, 10240),
        (9, 2, 3, 10240),
    ]
    assert {r.digest for r in parsed} == {hashlib.sha256(data).digest()}
    magic, fmt, kind = struct.unpack_from("<4sHB", records[0][1])
    assert (magic, fmt, kind) == (b"LRNM", FORMAT, 1)


def test_chunks_in_any_order_reassemble_to_the_same_bytes():
    data = np.random.default_rng(0).bytes(5000)
    records = [parse_record(v) for _, v in snapshot_records(3, data, 1024)]
    for order in ([4, 2, 0, 3, 1], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]):
        asm = Assembler()
        out = [asm.add(records[i]) for i in order]
        assert out[:-1] == [None] * 4
        assert out[-1] == data


def test_a_missing_chunk_completes_nothing_and_a_newer_complete_version_wins():
    asm = Assembler()
    old = [parse_record(v) for _, v in snapshot_records(4, b"o" * 3000, 1024)]
    new = [parse_record(v) for _, v in snapshot_records(5, b"n" * 2000, 1024)]
    assert [asm.add(r) for r in (old[0], old[2])] == [None, None]  # old[1] never comes
    assert asm.waiting == {4: (2, 3)}
    assert [asm.add(r) for r in new] == [None, b"n" * 2000]
    assert asm.waiting == {}
    assert asm.dropped_incomplete == 1
    assert asm.add(old[1]) is None  # too late: older than what completed


def test_a_truncated_record_is_refused_by_its_frame():
    _, value = snapshot_records(2, b"x" * 100, 1024)[0]
    with pytest.raises(BadRecord) as e:
        parse_record(value[:-1])
    assert e.value.reason == "truncated"
    with pytest.raises(BadRecord) as e:
        parse_record(value[:20])
    assert e.value.reason == "truncated"


def test_a_flipped_byte_fails_the_checksum_and_an_unknown_format_is_refused():
    _, value = snapshot_records(2, b"x" * 100, 1024)[0]
    flipped = bytearray(value)
    flipped[-1] ^= 1
    with pytest.raises(BadRecord) as e:
        parse_record(bytes(flipped))
    assert e.value.reason == "checksum"
    future = bytearray(value)
    struct.pack_into("<H", future, 4, FORMAT + 1)
    with pytest.raises(BadRecord) as e:
        parse_record(bytes(future))
    assert e.value.reason == "format"
    with pytest.raises(BadRecord) as e:
        parse_record(None)
    assert e.value.reason == "tombstone"


def test_a_whole_that_does_not_match_its_digest_is_refused():
    a = [parse_record(v) for _, v in snapshot_records(6, b"a" * 2048, 1024)]
    b = [parse_record(v) for _, v in snapshot_records(6, b"b" * 2048, 1024)]
    asm = Assembler()
    assert asm.add(a[0]) is None
    # a chunk of another body under the same version: each chunk's CRC is fine, the whole not
    b1 = b[1].__class__(b[1].kind, 6, 1, 2, 2048, a[0].digest, b[1].payload)
    with pytest.raises(BadRecord) as e:
        asm.add(b1)
    assert e.value.reason == "checksum"


def test_pin_records_round_trip():
    key, value = pin_record(True, 41)
    rec = parse_record(value)
    assert key == b"pin" and rec.kind == KIND_PIN
    assert parse_pin(rec) == (True, 41)
    assert parse_pin(parse_record(pin_record(False, 42)[1])) == (False, 42)


def test_the_follower_serves_a_good_snapshot_from_its_chunks():
    f = follower()
    snap = snapshot(7)
    records = snapshot_records(7, encode(snap), 1024)
    assert len(records) > 1
    served = [f.feed(v) for _, v in records]
    assert served[:-1] == [None] * (len(records) - 1)
    assert served[-1] is not None and f.ref.current.version == 7
    X = np.array([[1.0, -2.0, 0.5]], np.float32)
    np.testing.assert_array_equal(f.ref.current.predict_many(X), snap.predict_many(X))
    assert f.served == 1 and sum(f.rejected.values()) == 0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (snapshot(8, scale=float("nan")), "nonfinite"),
        (snapshot(8, dim=4), "schema"),
        (snapshot(8, task="regression"), "schema"),
    ],
)
def test_the_follower_refuses_a_bad_snapshot_and_keeps_serving(bad, reason):
    f = follower()
    for _, v in snapshot_records(7, encode(snapshot(7)), 4096):
        f.feed(v)
    for _, v in snapshot_records(8, encode(bad), 4096):
        assert f.feed(v) is None
    assert f.ref.current.version == 7
    assert dict(f.rejected) == {reason: 1}


def test_the_follower_refuses_truncated_and_corrupt_records_counting_each():
    f = follower()
    data = encode(snapshot(7))
    records = [v for _, v in snapshot_records(7, data, 1024)]
    f.feed(records[0][:-3])  # truncated
    corrupt = bytearray(records[1])
    corrupt[FRAME.size + 5] ^= 0xFF
    f.feed(bytes(corrupt))
    for v in records[2:]:
        f.feed(v)
    assert f.ref.current is None
    assert dict(f.rejected) == {"truncated": 1, "checksum": 1}
    garbage = snapshot_records(8, b"not a snapshot at all", 1024)
    f.feed(garbage[0][1])
    assert f.ref.current is None and f.rejected["malformed"] == 1


def test_records_naming_another_version_than_their_snapshot_are_refused():
    f = follower()
    for _, v in snapshot_records(9, encode(snapshot(7)), 4096):
        f.feed(v)
    assert f.ref.current is None and dict(f.rejected) == {"format": 1}


def test_a_rollback_is_a_newer_snapshot_and_pin_records_reach_versions():
    f = follower()
    for v in (7, 8):
        for _, r in snapshot_records(v, encode(snapshot(v)), 4096):
            f.feed(r)
    back = snapshot(7).__class__(**{**_fields(snapshot(7)), "version": 9, "rolled_back_from": 7})
    for _, r in snapshot_records(9, encode(back), 4096):
        f.feed(r)
    f.feed(pin_record(True, 9)[1])
    assert f.ref.current.version == 9 and f.ref.current.rolled_back_from == 7
    assert f.ref.pinned is True and f.pinned is True
    f.feed(pin_record(False, 9)[1])
    assert f.ref.pinned is False
    # an older version arriving late is never served: versions only go forward
    for _, r in snapshot_records(8, encode(snapshot(8)), 4096):
        f.feed(r)
    assert f.ref.current.version == 9


def _fields(snap: Snapshot) -> dict:
    return {name: getattr(snap, name) for name in snap.__dataclass_fields__}


class FakeConsumer:
    """Partition 0 of a topic held in a list (offset = index), read as kafka-python reads it."""

    def __init__(self, values: list[bytes | None], begin: int = 0):
        self.values, self.begin, self.pos, self.seeks = values, begin, 0, []

    def beginning_offsets(self, tps):
        return dict.fromkeys(tps, self.begin)

    def end_offsets(self, tps):
        return dict.fromkeys(tps, len(self.values))

    def seek(self, tp, offset):
        self.pos = max(offset, self.begin)
        self.seeks.append(offset)

    def position(self, tp):
        return self.pos

    def poll(self, timeout_ms=0):
        batch = [
            type("R", (), {"offset": i, "value": self.values[i]})()
            for i in range(self.pos, min(self.pos + 10, len(self.values)))
        ]
        self.pos += len(batch)
        return {"tp": batch} if batch else {}

    def metrics(self):
        return {"consumer-metrics": {"connection-count": 1}}


def topic(*versions: int, chunk_bytes: int = 4096) -> list:
    values: list[bytes | None] = []
    previous: list[bytes] = []
    for v in versions:
        records = snapshot_records(v, encode(snapshot(v)), chunk_bytes)
        values += [value for _, value in records]
        values += [None] * len(previous)  # tombstones for the previous snapshot's keys
        previous = [k for k, _ in records]
    return values


def test_catching_up_serves_the_newest_snapshot_from_the_tail():
    values = topic(*range(1, 41))  # 40 snapshots of 1 chunk and their tombstones: 79 records
    f = follower()
    consumer = FakeConsumer(values)
    f._catch_up(consumer)
    assert f.ref.current.version == 40 and f.served == 1  # only the newest was decoded
    assert consumer.seeks == [len(values) - 64, len(values)]  # the last 64, then the end
    assert f.caught_up


def test_catching_up_reads_further_back_for_a_snapshot_longer_than_the_window():
    values = topic(1, 2, chunk_bytes=100)  # 20 chunks each, then v1's 20 tombstones
    values = values + [pin_record(False, 2)[1]] * 40  # pins: v2's first chunks out of 64
    f = follower()
    consumer = FakeConsumer(values)
    f._catch_up(consumer)
    assert f.ref.current.version == 2
    assert consumer.seeks == [len(values) - 64, max(0, len(values) - 256), len(values)]
    assert f.pinned is False


def test_catching_up_skips_a_newest_snapshot_that_fails_and_serves_the_one_before():
    values = topic(1, 2)
    nan = snapshot(3, scale=float("nan"))  # complete and whole, but not servable
    values += [v for _, v in snapshot_records(3, encode(nan), 4096)]
    f = follower()
    f._catch_up(FakeConsumer(values))
    assert f.ref.current.version == 2
    assert dict(f.rejected) == {"nonfinite": 1}


def test_after_catching_up_new_records_are_followed_and_old_ones_ignored():
    f = follower()
    f._catch_up(FakeConsumer(topic(1, 2)))
    assert f.ref.current.version == 2
    for _, v in snapshot_records(2, encode(snapshot(2)), 4096):  # read again: not re-served
        assert f.feed(v) is None
    for _, v in snapshot_records(3, encode(snapshot(3)), 4096):
        f.feed(v)
    assert f.ref.current.version == 3 and f.served == 2
