"""What every Kafka event source keeps and reports alike, whichever client it wraps.

learnd's own positions per partition, the lag last seen, the revocation flag and hand-over
handler, and the counters and log lines of out-of-range repositioning and hand-overs: one
implementation, so that kafka-python and confluent-kafka sources cannot drift apart in what they
count or say.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from learnd.daemon.config import KafkaConfig

log = logging.getLogger("learnd.kafka")

# A position beyond the high watermark, with no records returned, for this long is out of range.
STALLED_AHEAD_S = 3.0
# A source that reads every partition of its topic (``assign_all``) looks its partitions up again
# this often, for partitions added since; and this often while the topic does not exist yet.
PARTITIONS_RECHECK_S = 30.0
MISSING_TOPIC_RETRY_S = 1.0


def out_of_range_gap(position: int, target: int) -> int:
    """Records skipped when repositioning from ``position`` to ``target`` (0 when rewinding).

    >>> out_of_range_gap(100, 250), out_of_range_gap(1000, 0)
    (150, 0)
    """
    return max(0, target - position)


class SourceState:
    """``assign_all``: read every partition of the topic, assigned by learnd itself instead of
    by the group (no group join; the group id only names the committed offsets). The label
    topic and the prediction log are read this way (:mod:`learnd.adapters.kafka.join_source`)."""

    def __init__(self, cfg: KafkaConfig, assign_all: bool = False):
        self.cfg = cfg
        self.assign_all = assign_all
        self._partitions_check_at = 0.0
        self._position: dict[int, int] = {}
        self._lag: dict[int, int] = {}
        self.first_offsets: dict[int, int] = {}  # the first offset read, per partition
        self._ahead_since: dict[int, float] = {}
        self.out_of_range_resets = 0
        self.skipped_records = 0
        self.revoked = False
        self.handovers = 0
        self.handover_commit_failures = 0
        self._revoke_handler: Callable[[], Mapping[int, int] | None] | None = None
        self._in_poll = False

    # ---------------------------------------------------------------- the EventSource port

    def on_revoke(self, handler: Callable[[], Mapping[int, int] | None]) -> None:
        self._revoke_handler = handler

    def lag(self) -> Mapping[int, int]:
        return dict(self._lag)

    def take_revoked(self) -> bool:
        revoked, self.revoked = self.revoked, False
        return revoked

    def ends(self) -> dict[int, int]:
        """The log end last seen per partition (at least the position): position plus lag."""
        return {p: self._position[p] + n for p, n in self._lag.items() if p in self._position}

    # ---------------------------------------------------------------- shared bookkeeping

    def _partitions_due(self) -> bool:
        """Whether an ``assign_all`` source should look its topic's partitions up now."""
        return self.assign_all and time.monotonic() >= self._partitions_check_at

    def _partitions_looked_up(self, found: bool) -> None:
        wait = PARTITIONS_RECHECK_S if found else MISSING_TOPIC_RETRY_S
        self._partitions_check_at = time.monotonic() + wait

    def _note_assigned(self, partition: int, origin: str) -> None:
        log.info(
            "partition %d assigned; starting from %s",
            partition,
            origin,
            extra={"event": "rebalance"},
        )

    def _note_revoked(self, partitions: list[int], how: str = "revoked") -> None:
        if partitions:
            self.revoked = True
            log.info("partitions %s: %s", how, sorted(partitions), extra={"event": "rebalance"})

    def _note_first_record(self, partition: int, offset: int) -> None:
        if partition not in self.first_offsets:
            self.first_offsets[partition] = offset
            log.info(
                "first record of partition %d at offset %d",
                partition,
                offset,
                extra={"event": "first_record", "partition": partition, "offset": offset},
            )

    def _stalled_ahead(self, partition: int, high_watermark: int, got_records: bool) -> bool:
        """True once the position has stayed beyond the high watermark, with nothing coming
        back, for STALLED_AHEAD_S (tansu answers out-of-range fetches with nothing)."""
        pos = self._position.get(partition)
        if got_records or pos is None or pos <= high_watermark:
            self._ahead_since.pop(partition, None)
            return False
        now = time.monotonic()
        return now - self._ahead_since.setdefault(partition, now) >= STALLED_AHEAD_S

    def _note_out_of_range(self, partition: int, position: int, target: int) -> None:
        """Count an out-of-range position moved to ``target``, loudly; never silently."""
        gap = out_of_range_gap(position, target)
        self.out_of_range_resets += 1
        self.skipped_records += gap
        self._position[partition] = target
        self._ahead_since.pop(partition, None)
        log.error(
            "partition %d: offset %d is out of range; moved to %d (auto_offset_reset=%s), "
            "%d records skipped",
            partition,
            position,
            target,
            self.cfg.auto_offset_reset,
            gap,
            extra={
                "event": "offset_out_of_range",
                "partition": partition,
                "position": position,
                "target": target,
                "skipped": gap,
            },
        )

    def _hand_over_positions(self, revoked: set[int]) -> dict[int, int] | None:
        """Checkpoint through the handler (only from inside our poll: the learner is waiting
        there) and return the revoked partitions' positions to commit; None: commit nothing."""
        if self._revoke_handler is None or not self._in_poll:
            return None  # not inside our poll(): the learner may be busy; checkpoint after it
        positions = self._revoke_handler()
        if positions is None:
            return None  # the checkpoint failed: commit nothing beyond the last good one
        return {p: o for p, o in positions.items() if p in revoked}

    def _note_handed_over(self, committed: Mapping[int, int]) -> None:
        self.handovers += 1
        self.revoked = False  # already checkpointed and committed
        log.info(
            "checkpointed and committed before handing over partitions %s",
            sorted(committed),
            extra={"event": "rebalance", "positions": dict(committed)},
        )

    def _note_handover_refused(self, error: Exception) -> None:
        self.handover_commit_failures += 1
        log.warning(
            "checkpointed before the hand-over, but the commit was refused (%s): the next "
            "owner may re-learn records since the previous commit",
            error,
            extra={"event": "rebalance"},
        )

    def _note_commit_failed(self, error: Exception) -> None:
        # Monitoring only: the checkpoint, not the group offset, is the source of truth.
        log.warning(
            "offset commit failed (positions stay in the checkpoint): %s",
            error,
            extra={"event": "commit_failed"},
        )
