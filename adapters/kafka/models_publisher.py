"""The learner's side of the models topic: every served snapshot, and pin changes, written off
the learning loop.

:class:`ModelsPublisher` subscribes to the learner's
:class:`~learnd.daemon.serving.snapshot.SnapshotRef` (the same reference, and the same
subscription, the shared-memory channel to the local serving processes uses). The subscriber
only puts the snapshot in a one-place slot and wakes a thread: the learning loop never waits
for the broker. The thread encodes the newest snapshot (the shared-memory bytes,
:func:`~learnd.adapters.serving.shared_snapshots.encode`), writes its chunks to partition 0 of
``kafka.models_topic`` (:mod:`learnd.daemon.serving.model_records`), waits for the broker's
acknowledgement, then writes tombstones for the previous snapshot's keys. A snapshot replaced
in the slot before the thread took it is not sent (drop to latest: replicas want the newest
model, not every one), and counted. A pin record follows every change of the rollback pin.
A write that fails is retried with the newest snapshot after a pause; serving goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from learnd.adapters.kafka.common import client_options
from learnd.adapters.serving.shared_snapshots import encode
from learnd.daemon.config import KafkaConfig
from learnd.daemon.serving.histogram import Histogram
from learnd.daemon.serving.model_records import FRAME, pin_record, snapshot_records
from learnd.daemon.serving.snapshot import Snapshot, SnapshotRef

log = logging.getLogger("learnd.replicas")

RETRY_S = 1.0  # pause after a failed write before the newest snapshot is tried again


def ensure_models_topic(cfg: KafkaConfig, replication: int = 1) -> None:
    """Create ``kafka.models_topic`` (1 partition, compacted) if it does not exist."""
    assert cfg.models_topic is not None
    admin = KafkaAdminClient(**client_options(cfg))
    try:
        if cfg.models_topic in set(admin.list_topics()):
            return
        topic = NewTopic(
            cfg.models_topic, 1, replication, topic_configs={"cleanup.policy": "compact"}
        )
        try:
            admin.create_topics([topic])
        except TopicAlreadyExistsError:
            pass  # created meanwhile by another process: what was wanted
    finally:
        admin.close()


def make_producer(cfg: KafkaConfig) -> KafkaProducer:
    return KafkaProducer(
        **client_options(cfg),
        acks="all",
        linger_ms=0,
        retries=5,
        max_in_flight_requests_per_connection=1,  # chunks land in order
        max_request_size=cfg.models_chunk_bytes + FRAME.size + 4096,
    )


class ModelsPublisher:
    """Writes the served snapshots of ``ref`` to ``cfg.models_topic`` from a thread of its own."""

    def __init__(self, cfg: KafkaConfig, ref: SnapshotRef, producer: Any = None):
        assert cfg.models_topic is not None
        self.cfg = cfg
        self.topic = cfg.models_topic
        self.ref = ref
        self._producer = producer
        self._slot: Snapshot | None = None
        self._offered_at = 0.0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._pin_sent: bool | None = None
        self._last_keys: list[bytes] = []
        self.sent = 0  # snapshots written and acknowledged
        self.dropped = 0  # replaced by a newer one before they were written
        self.failed = 0  # writes that failed (retried with the newest snapshot)
        self.pins = 0  # pin records written
        self.records = 0
        self.bytes = 0
        self.last_version: int | None = None
        self.latency = Histogram()  # seconds from served on the learner to acknowledged

    def start(self) -> None:
        """Start the writer thread (it connects: an unreachable broker never stops start-up)."""
        self._thread = threading.Thread(target=self._run, name="learnd-models-topic", daemon=True)
        self._thread.start()
        self.ref.subscribe(self._offer)

    def _offer(self, snap: Snapshot) -> None:
        """Called under the publish lock: only a slot and a wake-up."""
        with self._cond:
            if self._slot is not None:
                self.dropped += 1
            self._slot, self._offered_at = snap, time.monotonic()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._slot is not None, timeout=0.2)
                snap, offered_at, self._slot = self._slot, self._offered_at, None
                stopping = self._stop
            try:
                if self._producer is None:
                    ensure_models_topic(self.cfg)
                    self._producer = make_producer(self.cfg)
                if snap is not None:
                    self._send_snapshot(snap, offered_at)
                self._send_pin()
            except KafkaError as e:
                self.failed += 1
                log.error(
                    "writing to the models topic %s failed; retrying: %s",
                    self.topic,
                    e,
                    extra={"event": "models_topic_failed"},
                )
                if stopping:
                    return
                with self._cond:
                    if snap is not None and self._slot is None:
                        self._slot, self._offered_at = snap, offered_at
                    self._cond.wait_for(lambda: self._stop, timeout=RETRY_S)
                continue
            if stopping:
                return

    def _send_snapshot(self, snap: Snapshot, offered_at: float) -> None:
        producer = self._producer
        records = snapshot_records(snap.version, encode(snap), self.cfg.models_chunk_bytes)
        futures = [producer.send(self.topic, key=k, value=v, partition=0) for k, v in records]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=0)  # raises the KafkaError of a chunk that was not written
        for key in self._last_keys:  # a compacted topic now forgets the previous snapshot
            producer.send(self.topic, key=key, value=None, partition=0)
        self._last_keys = [k for k, _ in records]
        self.sent += 1
        self.records += len(records)
        self.bytes += sum(len(v) for _, v in records)
        self.last_version = snap.version
        self.latency.observe(time.monotonic() - offered_at)

    def _send_pin(self) -> None:
        pinned, current = self.ref.pinned, self.ref.current
        if current is None or pinned == self._pin_sent:
            return
        key, value = pin_record(pinned, current.version)
        self._producer.send(self.topic, key=key, value=value, partition=0).get(timeout=30)
        self._pin_sent = pinned
        self.pins += 1

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is waiting, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._producer is not None:
            try:
                self._producer.close(timeout=timeout_s)
            except KafkaError as e:  # the broker is unreachable: the next start publishes again
                log.warning(
                    "models topic %s: snapshot records not written at shutdown (%s); a replica "
                    "keeps the version it has until the learner publishes again",
                    self.topic,
                    e,
                    extra={"event": "models_topic_close"},
                )
