"""The Kafka event source: a consumer-group member with auto-commit off.

Positions come from learnd itself: when a partition is assigned, the consumer is sought to the
next offset learnd holds for it (from the checkpoint at start, then from what it has consumed),
so a rebalance never re-delivers what the model has already seen. Only a partition learnd has
never held starts from the group's committed offset or, failing that, ``auto_offset_reset``.
Committed offsets are written after checkpoints for lag monitoring only.

kafka-python (3.x) runs rebalance callbacks on its network thread, where blocking calls such as a
synchronous commit are refused; the callbacks here only seek, log and flag the revocation, and
the learning thread checkpoints after the poll that saw it.

kafka-python 3.0 drops a group join that completes while no ``poll()`` is waiting for it and sends
a new JoinGroup on the next poll (``join_group_async`` replaces a finished join task instead of
taking its result). A join takes the broker's initial rebalance delay, 3 s by default, so a
learner that polls for 0.1 s between batches can miss every completion and never join. While the
member is joining, a poll therefore goes on polling, with nothing done in between, until the
group has handed it its partitions or ``JOIN_WAIT_S`` (longer than that delay) has passed.

Out-of-range positions are never skipped silently: the consumer runs with kafka-python's
``auto_offset_reset='none'``, so an out-of-range fetch raises; learnd then counts it and the gap,
logs it loudly, and repositions by the configured ``kafka.auto_offset_reset``. (The same policy
places partitions that have no offset at all.) Brokers that answer an out-of-range fetch with
nothing instead of an error (tansu) are caught by a position that stays beyond the high
watermark while no records come back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from kafka.structs import OffsetAndMetadata

from learnd.adapters.kafka.common import broker_connected, client_options
from learnd.adapters.kafka.source_state import SourceState
from learnd.daemon.config import KafkaConfig
from learnd.daemon.events.record import RawRecord

log = logging.getLogger("learnd.kafka")

JOIN_WAIT_S = 5.0  # how long a poll goes on waiting while the member joins its group (see above)


class _Listener(AsyncConsumerRebalanceListener):
    """kafka-python 3 runs these on its IO thread, while the thread that called ``poll()`` waits
    for the rebalance to finish: the learner is not touching the model, so the hand-over
    checkpoint can run here, and the commit is awaited rather than blocked on."""

    def __init__(self, source: KafkaEventSource):
        self.source = source

    async def on_partitions_revoked(self, revoked):
        self.source._on_revoked(revoked)
        if revoked:
            await self.source._hand_over(revoked)

    async def on_partitions_assigned(self, assigned):
        self.source._on_assigned(assigned)

    async def on_partitions_lost(self, lost):  # membership lost: others may already own them
        self.source._on_revoked(lost, "lost")


class KafkaEventSource(SourceState):
    def __init__(self, cfg: KafkaConfig, assign_all: bool = False):
        super().__init__(cfg, assign_all)
        self._joined = False  # the group handed this member its partitions since the last revoke
        # Created on the learning thread's first poll, and again until it succeeds: a broker
        # that is down at start must not stop learnd from serving its checkpointed model.
        self.consumer: KafkaConsumer | None = None
        self._retry_at = 0.0
        self._backoff = 0.5

    def _connect(self) -> bool:
        if self.consumer is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            consumer = KafkaConsumer(
                **client_options(self.cfg),
                group_id=self.cfg.group_id,
                enable_auto_commit=False,
                auto_offset_reset="none",
                max_poll_records=self.cfg.max_poll_records,
                fetch_max_wait_ms=self.cfg.fetch_max_wait_ms,
                session_timeout_ms=self.cfg.session_timeout_ms,
                heartbeat_interval_ms=self.cfg.heartbeat_interval_ms,
                max_poll_interval_ms=self.cfg.max_poll_interval_ms,
            )
        except KafkaError as e:
            self._retry_at = time.monotonic() + self._backoff
            log.warning(
                "cannot reach the brokers (%s); retrying in %.1f s",
                e,
                self._backoff,
                extra={"event": "broker_down"},
            )
            self._backoff = min(self._backoff * 2, self.cfg.reconnect_backoff_max_ms / 1000)
            return False
        if not self.assign_all:
            consumer.subscribe([self.cfg.topic], listener=_Listener(self))
            self._joined = False
        self.consumer = consumer
        return True

    def _assign_every_partition(self) -> None:
        """Assign the topic's partitions (``assign_all``), those learnd holds at its own next
        offset; the others start from the committed offset, else ``auto_offset_reset``."""
        assert self.consumer is not None
        found = self.consumer.partitions_for_topic(self.cfg.topic)
        self._partitions_looked_up(bool(found))
        held = self.consumer.assignment()
        wanted = {TopicPartition(self.cfg.topic, p) for p in found}
        if not found or wanted <= held:
            return
        self.consumer.assign(sorted(wanted | held, key=lambda tp: tp.partition))
        for tp in held:  # assign() forgets fetch positions: keep learnd's
            if tp.partition in self._position:
                self.consumer.seek(tp, self._position[tp.partition])
        self._on_assigned(sorted(wanted - held, key=lambda tp: tp.partition))

    def _on_revoked(self, revoked, how: str = "revoked") -> None:
        if revoked:
            self._joined = False
        self._note_revoked([tp.partition for tp in revoked], how)

    async def _hand_over(self, revoked) -> None:
        """Checkpoint and commit before the revoked partitions go to another member."""
        if self.consumer is None:
            return
        positions = self._hand_over_positions({tp.partition for tp in revoked})
        if positions is None:
            return
        offsets = {
            TopicPartition(self.cfg.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in positions.items()
        }
        commit = getattr(self.consumer._coordinator, "_commit_offsets_sync_async", None)
        try:
            if offsets and commit is not None:
                await commit(offsets, timeout_ms=self.cfg.session_timeout_ms // 2)
        except KafkaError as e:
            self._note_handover_refused(e)
            return
        self._note_handed_over(positions)

    def _on_assigned(self, assigned) -> None:
        self._joined = True
        for tp in assigned:
            if tp.partition in self._position:
                self.consumer.seek(tp, self._position[tp.partition])
                origin = f"learnd's own offset {self._position[tp.partition]}"
            else:
                origin = f"committed offset or auto_offset_reset={self.cfg.auto_offset_reset}"
            self._note_assigned(tp.partition, origin)

    def poll(self, timeout_s: float) -> Sequence[RawRecord]:
        if not self._connect():
            time.sleep(timeout_s)  # waiting for the broker: do not spin
            return []
        assert self.consumer is not None
        if self._partitions_due():
            self._assign_every_partition()
        joining_until = time.monotonic() + (0.0 if self._joined or self.assign_all else JOIN_WAIT_S)
        self._in_poll = True
        try:
            batches = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
            while not (batches or self._joined) and time.monotonic() < joining_until:
                batches = self.consumer.poll(timeout_ms=int(max(timeout_s, 0.05) * 1000))
        except OffsetOutOfRangeError as e:
            self._reposition(dict(e.args[0]) if e.args and isinstance(e.args[0], dict) else {})
            return []
        except NoOffsetForPartitionError as e:
            self._place_new(e.args[0] if e.args else self.consumer.assignment())
            return []
        finally:
            self._in_poll = False
        out: list[RawRecord] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            recs = batches[tp]
            out += recs  # ConsumerRecords are RawRecords: no copy per record
            if recs:
                self._note_first_record(tp.partition, recs[0].offset)
                self._position[tp.partition] = recs[-1].offset + 1
        self._update_lag()
        self._check_stalled_ahead(batches)
        return out

    def _target(self, tp: TopicPartition) -> int:
        if self.cfg.auto_offset_reset == "earliest":
            return self.consumer.beginning_offsets([tp])[tp]
        return self.consumer.end_offsets([tp])[tp]

    def _place_new(self, partitions) -> None:
        """Partitions with no checkpoint and no committed offset start per auto_offset_reset."""
        for tp in partitions:
            target = self._target(tp)
            self.consumer.seek(tp, target)
            self._position[tp.partition] = target
            log.info(
                "partition %d has no offset; starting at %d (auto_offset_reset=%s)",
                tp.partition,
                target,
                self.cfg.auto_offset_reset,
                extra={"event": "rebalance"},
            )

    def _reposition(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Count an out-of-range position and move per auto_offset_reset; never silently."""
        for tp, position in offsets.items():
            target = self._target(tp)
            self.consumer.seek(tp, target)
            self._note_out_of_range(tp.partition, position, target)

    def _check_stalled_ahead(self, batches) -> None:
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is not None and self._stalled_ahead(tp.partition, hw, bool(batches.get(tp))):
                self._reposition({tp: self._position[tp.partition]})

    def _update_lag(self) -> None:
        # highwater() is the high watermark from the last fetch response: no broker round trip.
        # Lag is clamped at 0: tansu was seen reporting end offsets *below* the records actually
        # readable (196,712 for 200,000), which would make lag negative.
        lag = {}
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            pos = self._position.get(tp.partition)
            if hw is not None and pos is not None:
                lag[tp.partition] = max(0, hw - pos)
        self._lag = lag

    def seek(self, positions: Mapping[int, int]) -> None:
        self._position.update(positions)
        for tp in self.consumer.assignment() if self.consumer else ():
            if tp.partition in positions:
                self.consumer.seek(tp, positions[tp.partition])

    def commit(self, positions: Mapping[int, int]) -> None:
        if self.consumer is None:
            return
        owned = {tp.partition for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(self.cfg.topic, p): OffsetAndMetadata(o, "", -1)
            for p, o in positions.items()
            if p in owned
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            self._note_commit_failed(e)

    def assigned(self) -> int:
        return len(self.consumer.assignment()) if self.consumer else 0

    def connected(self) -> bool:
        return self.consumer is not None and broker_connected(self.consumer)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
