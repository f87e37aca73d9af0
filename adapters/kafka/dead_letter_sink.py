"""The dead-letter sink: rejected records go to a Kafka topic with their original bytes.

The value and key are the original ones; why and where from travel in headers (the convention
of Kafka Connect's dead-letter queues): ``learnd.reason``, ``learnd.detail``,
``learnd.source.topic``, ``learnd.source.partition``, ``learnd.source.offset``. The source
headers name the original record, so a consumer of the dead-letter topic can fetch it from the
source topic (while retention keeps it) and de-duplicate on them: dead letters are delivered at
least once (a crash after a dead letter was written and before the checkpoint that follows it
writes it again after the restart).

What a dead letter may hold is bounded, so that no record can stop the checkpoints:

- A record whose key and value together exceed ``kafka.dead_letter_max_bytes`` is sent
  truncated: the key cut to at most a sixteenth of the bound, the value to what is left, with
  the headers ``learnd.truncated: true``, ``learnd.original.key_bytes`` and
  ``learnd.original.value_bytes``. Counted (``truncated``).
- A record with a null value (a tombstone) is sent with an empty value and the header
  ``learnd.source.null: value`` (``key,value`` when the key is null too): Kafka refuses a record
  with neither a key nor a value.
- Should the broker still refuse a dead letter for its size (a topic with a lower
  ``max.message.bytes``), it is sent again with no key and no value, headers only. If even that
  is refused it is dropped, logged with its source and counted (``dropped``).

Any other failure (brokers unreachable, not authorised) keeps the dead letters queued, and
:meth:`KafkaDeadLetters.flush` raises: no checkpoint then moves past an undelivered one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from learnd.adapters.kafka.common import client_options
from learnd.daemon.config import KafkaConfig
from learnd.daemon.events.record import RawRecord

log = logging.getLogger("learnd.kafka")

# Room for the headers and the record batch's own framing on top of the key and value bound.
HEADROOM_BYTES = 16 * 1024
SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter as it goes to the topic."""

    key: bytes | None
    value: bytes
    headers: Headers
    truncated: bool


def letter(record: RawRecord, reason: str, detail: str, max_bytes: int) -> Letter:
    """The dead letter for ``record``: its key and value, bounded to ``max_bytes`` together.

    Examples
    --------
    >>> from learnd.daemon.events.record import Record
    >>> big = letter(Record("t", 0, 7, b"x" * 100, b"k" * 50), "not_json", "", max_bytes=64)
    >>> len(big.key), len(big.value), big.truncated
    (4, 60, True)
    >>> dict(big.headers)["learnd.original.value_bytes"]
    b'100'
    >>> tomb = letter(Record("t", 0, 8, None, None), "empty", "", max_bytes=64)
    >>> tomb.key, tomb.value, dict(tomb.headers)["learnd.source.null"]
    (None, b'', b'key,value')
    """
    key, value = record.key, record.value
    headers: Headers = [
        ("learnd.reason", reason.encode()),
        ("learnd.detail", detail.encode(errors="replace")[:1000]),
        ("learnd.source.topic", record.topic.encode()),
        ("learnd.source.partition", str(record.partition).encode()),
        ("learnd.source.offset", str(record.offset).encode()),
    ]
    if value is None:
        headers.append(("learnd.source.null", b"key,value" if key is None else b"value"))
    key_bytes, value_bytes = len(key or b""), len(value or b"")
    truncated = key_bytes + value_bytes > max_bytes
    if truncated:
        key = key[: max_bytes // 16] if key is not None else None
        value = (value or b"")[: max_bytes - len(key or b"")]
        headers += [
            ("learnd.truncated", b"true"),
            ("learnd.original.key_bytes", str(key_bytes).encode()),
            ("learnd.original.value_bytes", str(value_bytes).encode()),
        ]
    return Letter(key, bytes(value or b""), headers, truncated)


def headers_only(sent: Letter) -> Letter:
    """``sent`` without its key and value: what is left to send when the broker refuses it."""
    extra = (
        []
        if sent.truncated
        else [
            ("learnd.truncated", b"true"),
            ("learnd.original.key_bytes", str(len(sent.key or b"")).encode()),
            ("learnd.original.value_bytes", str(len(sent.value)).encode()),
        ]
    )
    return Letter(None, b"", sent.headers + extra, truncated=True)


class KafkaDeadLetters:
    """Dead letters are queued in memory and sent by a producer created when first needed; if
    the brokers cannot be reached they stay queued, and :meth:`flush` (before every checkpoint)
    raises, so no offset past an undelivered dead letter is ever checkpointed."""

    def __init__(self, cfg: KafkaConfig, flush_timeout_s: float = 30.0):
        self.cfg = cfg
        self.topic = cfg.dead_letter_topic
        self.max_bytes = cfg.dead_letter_max_bytes
        self.flush_timeout_s = flush_timeout_s
        self.producer: KafkaProducer | None = None
        self._queued: list[Letter] = []
        self._pending: list = []  # (future, letter) sent, not yet acknowledged
        self.truncated = 0  # sent without all of their key and value
        self.dropped = 0  # refused by the broker even without key and value

    def send(self, record: RawRecord, reason: str, detail: str) -> None:
        sent = letter(record, reason, detail, self.max_bytes)
        self.truncated += sent.truncated
        self._queued.append(sent)

    def _produce(self) -> None:
        if self.producer is None:
            self.producer = KafkaProducer(
                **client_options(self.cfg),
                acks="all",
                linger_ms=5,
                retries=10,
                max_request_size=self.max_bytes + HEADROOM_BYTES,
            )
        while self._queued:  # one at a time: one that raises is neither lost nor sent twice
            sent = self._queued[0]
            try:
                future = self.producer.send(
                    self.topic, value=sent.value, key=sent.key, headers=sent.headers
                )
            except SIZE_ERRORS as e:
                future = None
                self._refused(sent, e)
            self._queued.pop(0)
            if future is not None:
                self._pending.append((future, sent))

    def _refused(self, sent: Letter, error: Exception) -> None:
        """The broker (or the producer) refused ``sent`` for its size: send its headers only,
        or drop it if that was refused too."""
        if sent.key is not None or sent.value:
            self.truncated += not sent.truncated
            self._queued.insert(1, headers_only(sent))
            return
        self.dropped += 1
        source = {k: v.decode() for k, v in sent.headers if k.startswith("learnd.source.")}
        log.error(
            "dead letter refused by %s even without key and value (%s); dropped: %s",
            self.topic,
            error,
            source,
            extra={"event": "dead_letter_dropped", **source},
        )

    def flush(self) -> None:
        """Send and wait for every dead letter so far; raise ConnectionError if any is not
        acknowledged (those are kept and retried at the next flush)."""
        if not self._queued and not self._pending:
            return
        try:
            self._produce()
            assert self.producer is not None
            self.producer.flush(timeout=self.flush_timeout_s)
        except KafkaError as e:
            raise ConnectionError(f"dead-letter flush failed: {e}") from e
        failed = []
        for future, sent in self._pending:
            if future.is_done and future.failed() and isinstance(future.exception, SIZE_ERRORS):
                self._refused(sent, future.exception)
            elif not future.is_done or future.failed():
                failed.append(sent)
        self._pending = []
        if failed:
            self._queued = failed + self._queued
            raise ConnectionError(f"{len(failed)} dead letters not yet written to {self.topic}")
        if self._queued:  # headers only, for those refused for their size
            self.flush()

    def close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=self.flush_timeout_s)
            except KafkaError as e:
                # not lost: positions are committed only after a flush acknowledged every dead
                # letter before them, so these records are read again at the next start
                log.warning(
                    "dead letters not written to %s at shutdown (%s); their records are read "
                    "again at the next start",
                    self.topic,
                    e,
                    extra={"event": "dead_letter_close"},
                )
