"""The dead-letter sink's bounds, against a stand-in producer: nothing a record holds can make
a flush fail for good, and nothing is sent twice by a flush that is retried."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from learnd.adapters.kafka.dead_letter_sink import KafkaDeadLetters, letter
from learnd.daemon.config import KafkaConfig
from learnd.daemon.events.record import Record


class Future:
    def __init__(self, error=None):
        self.is_done = True
        self.exception = error

    def failed(self):
        return self.exception is not None


class Producer:
    """Refuses (at send or at the broker) what ``refuse`` says, keeps what it accepts."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.sent = []

    def send(self, topic, value, key, headers):
        verdict = self.refuse(key, value, dict(headers))
        if verdict == "raise":
            raise MessageSizeTooLargeError("too large for the producer")
        if verdict == "timeout":
            raise KafkaTimeoutError("no broker")
        if verdict is not None:
            return Future(verdict)
        self.sent.append((key, value, dict(headers)))
        return Future()

    def flush(self, timeout=None):
        pass


def sink(refuse=lambda k, v, h: None, max_bytes=1024):
    s = KafkaDeadLetters(KafkaConfig(dead_letter_max_bytes=max_bytes))
    s.producer = Producer(refuse)
    return s


def rec(offset, value, key=None):
    return Record("events", 0, offset, value, key)


def test_a_record_within_the_bound_travels_unchanged_with_its_source():
    out = letter(rec(5, b"{{{", b"k"), "not_json", "bad", max_bytes=1024)
    h = dict(out.headers)
    assert (out.key, out.value, out.truncated) == (b"k", b"{{{", False)
    assert h["learnd.source.offset"] == b"5" and h["learnd.reason"] == b"not_json"
    assert "learnd.truncated" not in h


@pytest.mark.parametrize("key_len,value_len", [(0, 5000), (5000, 10), (3000, 3000), (1024, 1)])
def test_key_and_value_over_the_bound_are_cut_to_it_and_say_so(key_len, value_len):
    key = b"k" * key_len if key_len else None
    out = letter(rec(1, b"v" * value_len, key), "not_json", "", max_bytes=1024)
    h = dict(out.headers)
    assert out.truncated and h["learnd.truncated"] == b"true"
    assert len(out.key or b"") + len(out.value) <= 1024
    assert len(out.key or b"") <= 1024 // 16
    assert h["learnd.original.key_bytes"] == str(key_len).encode()
    assert h["learnd.original.value_bytes"] == str(value_len).encode()
    assert out.value == b"v" * len(out.value)  # a prefix of the original


def test_tombstones_and_null_keys_become_sendable_letters():
    s = sink()
    s.send(rec(0, None, None), "empty", "record value is null (a tombstone)")
    s.send(rec(1, None, b"key"), "empty", "")
    s.send(rec(2, b"{{{", None), "not_json", "")
    s.flush()
    sent = s.producer.sent
    assert [(k, v) for k, v, _ in sent] == [(None, b""), (b"key", b""), (None, b"{{{")]
    assert [h.get("learnd.source.null") for *_, h in sent] == [b"key,value", b"value", None]


def test_a_letter_refused_for_its_size_goes_again_as_headers_only():
    for how in ("raise", MessageSizeTooLargeError("refused by the broker")):
        s = sink(lambda k, v, h, how=how: how if len(v) > 100 else None, max_bytes=4096)
        s.send(rec(0, b"a" * 50), "not_json", "")
        s.send(rec(1, b"b" * 500), "not_json", "")
        s.send(rec(2, b"c" * 50), "not_json", "")
        s.flush()
        by_offset = {h["learnd.source.offset"]: (k, v, h) for k, v, h in s.producer.sent}
        assert sorted(by_offset) == [b"0", b"1", b"2"] and len(s.producer.sent) == 3
        key, value, h = by_offset[b"1"]
        assert (key, value, h["learnd.truncated"]) == (None, b"", b"true")
        assert h["learnd.original.value_bytes"] == b"500"
        assert (s.truncated, s.dropped) == (1, 0)


def test_a_letter_refused_even_as_headers_only_is_dropped_and_counted_not_retried_forever():
    s = sink(lambda k, v, h: "raise" if h["learnd.source.offset"] == b"1" else None)
    for i in range(3):
        s.send(rec(i, b"x"), "not_json", "")
    s.flush()  # does not raise: the checkpoint goes on
    assert [h["learnd.source.offset"] for *_, h in s.producer.sent] == [b"0", b"2"]
    assert (s.truncated, s.dropped) == (1, 1)
    s.flush()
    assert len(s.producer.sent) == 2


def test_an_unreachable_broker_fails_the_flush_and_nothing_is_sent_twice():
    down = {"now": True}
    s = sink(
        lambda k, v, h: "timeout" if down["now"] and h["learnd.source.offset"] == b"1" else None
    )
    for i in range(3):
        s.send(rec(i, b"x"), "not_json", "")
    with pytest.raises(ConnectionError):
        s.flush()
    down["now"] = False
    s.flush()
    offsets = [h["learnd.source.offset"] for *_, h in s.producer.sent]
    assert offsets == [b"0", b"1", b"2"]  # each once, in order


def test_closing_with_the_broker_unreachable_logs_and_returns(caplog):
    from kafka.errors import KafkaTimeoutError

    s = sink()

    def close(timeout=None):
        raise KafkaTimeoutError("Timeout waiting for future")

    s.producer.close = close
    s.close()
    assert "read again at the next start" in caplog.text
