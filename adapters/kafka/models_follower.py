"""A serving replica's side of the models topic: follow it, check every snapshot, serve the newest.

:class:`ModelsFollower` reads partition 0 of ``kafka.models_topic`` without a consumer group
(nothing to commit: where to start is always "the newest snapshot"). At start it reads the
topic's tail: the last :data:`FIRST_WINDOW` records, then a window four times larger while it
holds no complete snapshot that passes the checks, down to the topic's beginning. Then it
follows the topic as records arrive. Each record's frame is checked
(:func:`~learnd.daemon.serving.model_records.parse_record`: truncated, unknown format, CRC-32),
chunks are joined (:class:`~learnd.daemon.serving.model_records.Assembler`: size, SHA-256), the
whole is read by the one checked decoder of the shared-memory channel
(:func:`~learnd.adapters.serving.shared_snapshots.decode`: malformed, non-finite) and compared
with the replica's schema. Only then is it served, by
:meth:`~learnd.daemon.serving.snapshot.SnapshotRef.adopt` on the replica's reference: the one
hot-swap mechanism, mirrored into the replica's serving processes exactly as on the learner.
Anything refused is counted by reason and logged, and the replica serves what it served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from learnd.adapters.kafka.common import broker_connected, client_options
from learnd.adapters.serving.shared_snapshots import BadSnapshot, decode
from learnd.daemon.config import KafkaConfig, SchemaConfig
from learnd.daemon.serving.histogram import Histogram
from learnd.daemon.serving.model_records import (
    FRAME,
    KIND_PIN,
    Assembler,
    BadRecord,
    Record,
    parse_pin,
    parse_record,
    schema_problem,
)
from learnd.daemon.serving.snapshot import Snapshot, SnapshotRef

log = logging.getLogger("learnd.replicas")

FIRST_WINDOW = 64  # records read back from the topic's end at start
REASONS = ("truncated", "format", "checksum", "malformed", "nonfinite", "schema")
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def make_consumer(cfg: KafkaConfig) -> KafkaConsumer:
    fetch = cfg.models_chunk_bytes + FRAME.size + 4096
    return KafkaConsumer(
        **client_options(cfg),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=max(fetch, 1 << 20),
        fetch_max_bytes=max(fetch, 50 << 20),
        fetch_max_wait_ms=20,  # a broker that holds fetches to the limit delays swaps by it
        consumer_timeout_ms=1000,
    )


def reason_of(problem: BadSnapshot) -> str:
    """The bounded label of a snapshot the decoder refused."""
    return "nonfinite" if "non-finite" in str(problem) else "malformed"


class ModelsFollower:
    """Keeps ``ref`` on the newest snapshot of ``cfg.models_topic`` that passes the checks."""

    def __init__(self, cfg: KafkaConfig, schema: SchemaConfig, ref: SnapshotRef, consumer=None):
        assert cfg.models_topic is not None
        self.cfg = cfg
        self.schema = schema
        self.ref = ref
        self.tp = TopicPartition(cfg.models_topic, 0)
        self._consumer = consumer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assembler = Assembler()
        self.records: Counter[str] = Counter()  # kind: snapshot | pin | tombstone
        self.rejected: Counter[str] = Counter()  # reason -> snapshots or records refused
        self.served = 0
        self.pinned: bool | None = None
        self.caught_up = False
        self.broker_connected = False
        self.started_at = time.monotonic()
        self.first_served_s: float | None = None  # seconds from start to serving
        self.delay = Histogram(DELAY_BUCKETS)  # published on the learner -> served here
        self.last_problem: str | None = None

    # -- one record at a time (the tests drive this directly) -----------------------------

    def feed(self, value: bytes | None) -> Snapshot | None:
        """Take one record's value; returns the snapshot it completed and served, if any."""
        try:
            rec = parse_record(value)
        except BadRecord as e:
            if e.reason == "tombstone":
                self.records["tombstone"] += 1
                return None
            self._refuse(e.reason, str(e))
            return None
        if rec.kind == KIND_PIN:
            self.records["pin"] += 1
            self._pin(rec)
            return None
        self.records["snapshot"] += 1
        data = self._assemble(rec)
        if data is None:
            return None
        snap = self.check(rec.version, data)
        if snap is not None and self.ref.adopt(snap):
            self._served(snap)
            return snap
        return None

    def _assemble(self, rec: Record) -> bytes | None:
        try:
            return self.assembler.add(rec)
        except BadRecord as e:
            self._refuse(e.reason, str(e))
            return None

    def check(self, version: int, data: bytes) -> Snapshot | None:
        """The snapshot in ``data`` if it passes every check, else None (counted, logged)."""
        try:
            snap = decode(data)
        except BadSnapshot as e:
            self._refuse(reason_of(e), f"version {version}: {e}")
            return None
        if snap.version != version:
            self._refuse("format", f"records of version {version} hold version {snap.version}")
            return None
        problem = schema_problem(snap, self.schema)
        if problem is not None:
            self._refuse("schema", f"version {version}: {problem}")
            return None
        return snap

    def _refuse(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        self.last_problem = detail
        current = self.ref.current
        log.error(
            "refused a models-topic record; still serving version %s: %s",
            current.version if current else None,
            detail,
            extra={"event": "replica_snapshot_rejected", "reason": reason},
        )

    def _pin(self, rec: Record) -> None:
        try:
            pinned, version = parse_pin(rec)
        except BadRecord as e:
            self._refuse(e.reason, str(e))
            return
        if pinned != self.pinned:
            log.info(
                "the learner %s serving at version %d",
                "pinned" if pinned else "unpinned",
                version,
                extra={"event": "replica_pin", "pinned": pinned, "version": version},
            )
        self.pinned = pinned
        self.ref.restore((), pinned)  # shown by `versions`, as on the learner

    def _served(self, snap: Snapshot) -> None:
        self.served += 1
        if self.first_served_s is None:
            self.first_served_s = time.monotonic() - self.started_at
        self.delay.observe(max(0.0, time.time() - snap.published_unix))
        log.info(
            "serving version %d",
            snap.version,
            extra={"event": "replica_serving", "version": snap.version},
        )

    # -- the topic ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="learnd-models-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._consumer is None:
                    self._consumer = make_consumer(self.cfg)
                    self._consumer.assign([self.tp])
                if not self.caught_up:
                    self._catch_up(self._consumer)
                self._follow(self._consumer)
            except KafkaError as e:
                self.broker_connected = False
                log.warning(
                    "models topic %s: %s; retrying",
                    self.tp.topic,
                    e,
                    extra={"event": "replica_broker"},
                )
                self._stop.wait(1.0)

    def _catch_up(self, consumer: Any) -> None:
        """Serve the newest good snapshot in the topic's tail, reading further back until one
        is found or the beginning is reached."""
        begin = consumer.beginning_offsets([self.tp])[self.tp]
        end = consumer.end_offsets([self.tp])[self.tp]
        self.broker_connected = True
        window = FIRST_WINDOW
        while not self._stop.is_set():
            start = max(begin, end - window)
            found = self._newest_in(consumer, start, end)
            if found is not None or start == begin:
                break
            window *= 4
        consumer.seek(self.tp, end)
        self.caught_up = True
        self.assembler = Assembler()
        current = self.ref.current
        self.assembler.completed = current.version if current is not None else 0

    def _newest_in(self, consumer: Any, start: int, end: int) -> Snapshot | None:
        """Read ``[start, end)``; serve the newest complete snapshot there that passes."""
        consumer.seek(self.tp, start)
        assembler, complete = Assembler(keep=8), []
        pin: Record | None = None
        while consumer.position(self.tp) < end and not self._stop.is_set():
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.offset >= end:
                        continue
                    try:
                        rec = parse_record(r.value)
                        if rec.kind == KIND_PIN:
                            pin = rec
                        elif (data := assembler.add(rec)) is not None:
                            complete.append((rec.version, data))
                    except BadRecord as e:
                        if e.reason != "tombstone":
                            self._refuse(e.reason, str(e))
        if pin is not None:
            self._pin(pin)
        for version, data in reversed(complete):  # the newest that passes
            snap = self.check(version, data)
            if snap is not None:
                if self.ref.adopt(snap):
                    self._served(snap)
                return snap
        return None

    def _follow(self, consumer: Any) -> None:
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=200)
            self.broker_connected = broker_connected(consumer)
            for records in batches.values():
                for r in records:
                    self.feed(r.value)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._consumer is not None:
            self._consumer.close()
