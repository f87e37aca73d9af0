"""The event source of ``labels.mode = "join"``: learnd's event source, plus a consumer of the
label topic and one of the prediction log, each reading every partition of its topic (assigned by
learnd, no group join; their committed offsets under ``kafka.group_id`` with ``.labels`` and
``.predictions`` appended).

Their records are handed to the pipeline with the events' (undecoded: the join decodes them,
:class:`learnd.daemon.labels.stage.JoinStage`). The label topic is left unread for a poll while
the event topic is behind and its labels would overflow ``labels.max_early_labels``
(:meth:`~learnd.daemon.labels.stage.JoinStage.reads_labels`). Their positions are the join's, kept in the same
checkpoint as the model: the source seeks to them when the checkpoint is restored and commits
them after each checkpoint, never before (a position committed ahead of a checkpoint would
skip labels after a crash).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

from learnd.daemon.events.decoder import Decoded
from learnd.daemon.events.record import RawRecord
from learnd.daemon.labels.stage import JoinStage
from learnd.daemon.ports import EventSource

log = logging.getLogger("learnd.kafka")


class JoinSource:
    """An :class:`learnd.daemon.ports.EventSource` over the event source and the join's."""

    def __init__(
        self,
        events: EventSource,
        sides: Mapping[str, EventSource],
        join: JoinStage,
        per_poll: int = 2000,
    ):
        self.events = events
        self.sides = dict(sides)  # topic -> its source
        self.join = join
        self.per_poll = per_poll  # the most records one poll of a side source returns
        self.labels_paused = 0  # polls that left the label topic unread (JoinStage.reads_labels)

    def poll(self, timeout_s: float) -> Sequence[RawRecord] | Decoded:
        got = self.events.poll(timeout_s)
        extra: list[RawRecord] = []
        labels_too = self.join.reads_labels(sum(self.events.lag().values()), self.per_poll)
        for topic, side in self.sides.items():
            if topic == self.join.topic and not labels_too:
                self.labels_paused += 1
                continue
            extra += side.poll(0.0)  # type: ignore[arg-type]  # in-thread: raw records
        if not extra:
            return got
        if isinstance(got, Decoded):
            return dataclasses.replace(got, joined=(*got.joined, *extra))
        return [*got, *extra]

    def seek(self, positions: Mapping[int, int]) -> None:
        self.events.seek(positions)
        for topic, side in self.sides.items():
            if self.join.positions.get(topic):
                side.seek(self.join.positions[topic])

    def commit(self, positions: Mapping[int, int]) -> None:
        self.events.commit(positions)
        for topic, side in self.sides.items():
            if self.join.positions.get(topic):
                side.commit(self.join.positions[topic])

    def lag(self) -> Mapping[int, int]:
        return self.events.lag()

    def label_lag(self) -> int:
        """Records behind the end of the label topic and the prediction log, together."""
        return sum(sum(side.lag().values()) for side in self.sides.values())

    def assigned(self) -> int:
        return self.events.assigned()

    def take_revoked(self) -> bool:
        revoked = self.events.take_revoked()
        for side in self.sides.values():
            revoked = side.take_revoked() or revoked
        return revoked

    def on_revoke(self, handler: Callable[[], Mapping[int, int] | None]) -> None:
        self.events.on_revoke(handler)

    def connected(self) -> bool:
        return self.events.connected()

    def close(self) -> None:
        self.events.close()
        for side in self.sides.values():
            side.close()

    def __getattr__(self, name: str):
        # the event source's counters (out_of_range_resets, handovers, ...) for metrics
        return getattr(self.events, name)
