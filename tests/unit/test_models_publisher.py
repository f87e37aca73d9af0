"""The learner's writer of the models topic, against a fake producer: every served snapshot
written in order, chunked, the previous snapshot's keys tombstoned; a snapshot superseded
before the thread takes it is dropped and counted; pin changes become pin records; a failed
write is retried with the newest snapshot."""

from __future__ import annotations

import threading

import numpy as np
from kafka.errors import KafkaTimeoutError

from learnd.adapters.kafka.models_follower import ModelsFollower
from learnd.adapters.kafka.models_publisher import ModelsPublisher
from learnd.daemon.config import KafkaConfig, SchemaConfig
from learnd.daemon.serving.model_records import KIND_PIN, parse_pin, parse_record
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

CFG = KafkaConfig(models_topic="models", models_chunk_bytes=1024)
SCHEMA = SchemaConfig(task="binary", features=("a", "b", "c"))


class Done:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error is not None:
            raise self.error


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.fail_next = 0
        self.gate = threading.Event()
        self.gate.set()

    def send(self, topic, key, value, partition):
        assert (topic, partition) == ("models", 0)
        self.gate.wait(10)
        if self.fail_next:
            self.fail_next -= 1
            return Done(KafkaTimeoutError("broker gone"))
        self.sent.append((key, value))
        return Done()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def draft(seed: int) -> Draft:
    rng = np.random.default_rng(seed)
    w = DenseWeights(
        (rng.normal(size=(3, 40)).astype(np.float32), np.ones((40, 1), np.float32)),
        (np.zeros(40, np.float32), np.zeros(1, np.float32)),
        "relu",
        np.zeros(3, np.float32),
        np.ones(3, np.float32),
        0.0,
        1.0,
    )
    return Draft("binary", (0, 1), ("a", "b", "c"), w, seed, {})


def replay(sent) -> ModelsFollower:
    f = ModelsFollower(CFG, SCHEMA, SnapshotRef(), consumer=object())
    for _, value in sent:
        f.feed(value)
    return f


def test_every_snapshot_is_written_in_chunks_and_the_previous_one_tombstoned():
    ref, producer = SnapshotRef(), FakeProducer()
    pub = ModelsPublisher(CFG, ref, producer)
    pub.start()
    ref.publish(draft(1))
    pub.close()  # writes what is waiting
    first = list(producer.sent)
    n = len([k for k, v in first if k.startswith(b"snapshot/1/")])
    assert n > 1  # 3x40 float32 weights: several 1 KiB chunks
    assert [k for k, _ in first] == [f"snapshot/1/{i}".encode() for i in range(n)] + [b"pin"]

    ref2, producer2 = SnapshotRef(), FakeProducer()
    pub2 = ModelsPublisher(CFG, ref2, producer2)
    pub2.start()
    ref2.publish(draft(1))
    _until(lambda: pub2.sent == 1)
    ref2.publish(draft(2))
    _until(lambda: pub2.sent == 2)
    pub2.close()
    keys = [k for k, v in producer2.sent if v is None]
    assert keys == [f"snapshot/1/{i}".encode() for i in range(n)]  # v1's keys, after v2's
    assert replay(producer2.sent).ref.current.version == 2
    assert (pub2.sent, pub2.dropped, pub2.failed) == (2, 0, 0)


def test_a_snapshot_replaced_before_it_is_written_is_dropped_and_counted():
    ref, producer = SnapshotRef(), FakeProducer()
    pub = ModelsPublisher(CFG, ref, producer)
    pub.start()
    producer.gate.clear()  # the broker stalls: the writer holds version 1
    ref.publish(draft(1))
    _until(lambda: pub._slot is None)
    for seed in (2, 3, 4):  # the learner goes on publishing; it never waits
        ref.publish(draft(seed))
    producer.gate.set()
    _until(lambda: pub.sent == 2)
    pub.close()
    versions = sorted({parse_record(v).version for _, v in producer.sent if v and v[6] == 1})
    assert versions == [1, 4]
    assert pub.dropped == 2  # versions 2 and 3
    assert replay(producer.sent).ref.current.version == 4


def test_rollback_and_unpin_become_a_snapshot_and_pin_records():
    ref, producer = SnapshotRef(), FakeProducer()
    pub = ModelsPublisher(CFG, ref, producer)
    ref.publish(draft(1))
    ref.publish(draft(2))  # both before the publisher runs: it sees 2 first (no race with 1)
    pub.start()
    _until(lambda: pub.sent >= 1 and pub.last_version == 2 and pub.pins == 1)
    ref.rollback(1)
    _until(lambda: pub.pins == 2)
    ref.unpin()
    _until(lambda: pub.pins == 3)
    pub.close()
    pins = [parse_pin(r) for _, v in producer.sent if v and (r := parse_record(v)).kind == KIND_PIN]
    assert pins == [(False, 2), (True, 3), (False, 3)]
    f = replay(producer.sent)
    assert f.ref.current.version == 3 and f.ref.current.rolled_back_from == 1
    assert f.ref.pinned is False


def test_a_failed_write_is_retried_with_the_newest_snapshot(monkeypatch):
    monkeypatch.setattr("learnd.adapters.kafka.models_publisher.RETRY_S", 0.01)
    ref, producer = SnapshotRef(), FakeProducer()
    producer.fail_next = 1
    pub = ModelsPublisher(CFG, ref, producer)
    pub.start()
    ref.publish(draft(1))
    _until(lambda: pub.sent == 1)
    pub.close()
    assert pub.failed == 1
    assert replay(producer.sent).ref.current.version == 1


def _until(predicate, timeout_s: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.005)):
        if predicate():
            return
        done.wait(0.005)
    raise AssertionError("condition not reached")


def test_closing_with_the_broker_unreachable_logs_and_returns(caplog):
    class Unreachable(FakeProducer):
        def close(self, timeout=None):
            raise KafkaTimeoutError("Timeout waiting for future")

    pub = ModelsPublisher(CFG, SnapshotRef(), Unreachable())
    pub.start()
    pub.close()  # the daemon's shutdown goes on: serving and metrics are stopped after this
    assert "not written at shutdown" in caplog.text
