"""The event source of ``labels.mode = "join"``: learnd's event source, plus a consumer of the
label topic and one of the prediction log, each reading every partition of its topic (assigned by
learnd, no group join; their committed offsets under ``kafka.group_id`` with ``.labels`` and
``.predictions`` appended).

With ``kafka.consumer_process: true`` the two consumers run in the consumer process beside the
event consumer, which decodes their records there and hands them over decoded with the events
(:class:`learnd.daemon.labels.side_records.SideRecords`); in this process (``false``) their
records are handed to the pipeline as read, and the join decodes them
(:class:`learnd.daemon.labels.stage.JoinStage`). Either way their positions are the join's, kept
in the same checkpoint as the model: the source seeks to them when the checkpoint is restored
and commits them after each checkpoint, never before (a position committed ahead of a
checkpoint would skip labels after a crash).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

from learnd.daemon.config import LearndConfig
from learnd.daemon.events.decoder import Decoded
from learnd.daemon.events.record import RawRecord
from learnd.daemon.labels.stage import JoinStage
from learnd.daemon.ports import EventSource

log = logging.getLogger("learnd.kafka")


def side_sources(cfg: LearndConfig) -> dict[str, EventSource]:
    """The consumers of the label topic and the prediction log, by topic (nothing connects
    until a first poll)."""
    from learnd.adapters.kafka.clients import client_source_class

    k = cfg.kafka
    cls = client_source_class(k)
    topics = (k.labels_topic, k.predictions_topic)
    # Every partition of each, assigned by learnd, not by a group: one daemon reads them whole
    # (docs/labels.md), and no group join can stall them. A group id and a client id of their
    # own each name their committed offsets and their connections.
    return {
        t: cls(
            k.model_copy(
                update={
                    "topic": t,
                    "group_id": f"{k.group_id}.{suffix}",
                    "client_id": f"{k.client_id}-{suffix}",
                }
            ),
            assign_all=True,
        )
        for t, suffix in zip(topics, ("labels", "predictions"), strict=True)
    }


class JoinSource:
    """An :class:`learnd.daemon.ports.EventSource` over the event source and the join's."""

    def __init__(self, events: EventSource, sides: Mapping[str, EventSource], join: JoinStage):
        self.events = events
        # topic -> its source, in this thread; none: the consumer process reads them
        # (``events`` then has ``seek_side``, ``commit_side`` and ``side_lag``)
        self.sides = dict(sides)
        self.join = join

    def poll(self, timeout_s: float) -> Sequence[RawRecord] | Decoded:
        got = self.events.poll(timeout_s)
        extra: list[RawRecord] = []
        for side in self.sides.values():
            extra += side.poll(0.0)  # type: ignore[arg-type]  # in-thread: raw records
        if not extra:
            return got
        if isinstance(got, Decoded):
            return dataclasses.replace(got, joined=(*got.joined, *extra))
        return [*got, *extra]

    def seek(self, positions: Mapping[int, int]) -> None:
        self.events.seek(positions)
        for topic, pos in self.join.positions.items():
            if not pos:
                continue
            if topic in self.sides:
                self.sides[topic].seek(pos)
            else:
                self.events.seek_side(topic, pos)  # type: ignore[attr-defined]

    def commit(self, positions: Mapping[int, int]) -> None:
        self.events.commit(positions)
        for topic, pos in self.join.positions.items():
            if not pos:
                continue
            if topic in self.sides:
                self.sides[topic].commit(pos)
            else:
                self.events.commit_side(topic, pos)  # type: ignore[attr-defined]

    def lag(self) -> Mapping[int, int]:
        return self.events.lag()

    def label_lag(self) -> int:
        """Records behind the end of the label topic and the prediction log, together."""
        if not self.sides:
            return self.events.side_lag()  # type: ignore[attr-defined]
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
