"""The join as a stage of the pipeline (``labels.mode = "join"``): it takes the unlabelled events
out of the event decoder's rejections, the label topic's records out of what was polled, and
hands back joined examples as an :class:`EventBatch`, learned exactly as inline labelled events.

It keeps the label topic's positions beside its pending state, so that both go into the same
checkpoint as the model (:meth:`JoinStage.state_dict`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from learnd.daemon.config import LearndConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.events.decoder import EventBatch, LabelParser, Reason, Rejection
from learnd.daemon.events.record import RawRecord
from learnd.daemon.labels.join import Joiner, Served
from learnd.daemon.labels.records import JoinDecoder
from learnd.daemon.labels.rows import Unlabelled
from learnd.daemon.labels.served import ServedAccuracy
from learnd.daemon.labels.side_records import SideRecords, decode_side
from learnd.daemon.serving.histogram import Histogram

# Seconds from features to their label: a click within seconds, a chargeback within days.
DELAY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


def default_target(cfg: LearndConfig) -> Any:
    """``labels.default_label`` as the learner's target (None: expired rows are dropped)."""
    lab = cfg.labels
    if lab.on_expiry != "learn":
        return None
    y, problem = LabelParser(cfg.schema_).parse(lab.default_label)
    if problem is not None:
        raise StartupError(f"labels.default_label {lab.default_label!r} is invalid: {problem[1]}")
    return y


class JoinStage:
    def __init__(self, cfg: LearndConfig):
        schema = cfg.schema_
        self.topic = cfg.kafka.labels_topic
        self.predictions_topic = cfg.kafka.predictions_topic
        self.decoder = JoinDecoder(schema)
        self.y_dtype = LabelParser(schema).dtype
        n_scores = 1 if schema.task == "regression" else len(schema.class_values)
        self.joiner = Joiner(cfg.labels, schema.dim, default_target(cfg), n_scores)
        self.served = ServedAccuracy(schema.task)
        self.positions: dict[str, dict[int, int]] = {self.topic: {}, self.predictions_topic: {}}
        self.rejected: Counter[str] = Counter()
        self.unlabelled = 0  # unlabelled events and logged predictions taken in
        self.labels = 0  # valid label records taken in
        self.delay = Histogram(DELAY_BUCKETS)  # seconds from features to label, when matched

    def reads_labels(self, events_behind: int, per_poll: int) -> bool:
        """Whether to read more of the label topic now. Not while the event topic is behind
        (``events_behind`` records not yet handed over) and one more poll of ``per_poll``
        labels could pass ``labels.max_early_labels``: after a backlog the label topic, read
        apace, runs ahead of the events, and the early labels past the cap would be dropped
        as orphans although their features are still to come. Once the events have caught
        up, labels are read as they come (an early label then is likely an orphan)."""
        if events_behind <= 0:
            return True
        return self.joiner.early_labels + per_poll <= self.joiner.cfg.max_early_labels

    def split(self, records: Sequence[RawRecord]) -> tuple[list[RawRecord], list[RawRecord]]:
        """Records of learnd's event topic, and those of the join's own topics."""
        mine = (self.topic, self.predictions_topic)
        events = [r for r in records if r.topic not in mine]
        if len(events) == len(records):
            return list(records), []
        return events, [r for r in records if r.topic in mine]

    def take_unlabelled(self, rejections: Sequence[Rejection], now: float) -> list[Rejection]:
        """Unlabelled events among the decoder's rejections join; the other rejections stand
        (a source that decodes with the event decoder alone; :meth:`JoinDecoder.decode` leaves
        none there)."""
        rest: list[Rejection] = []
        for r in rejections:
            if r.reason != Reason.MISSING_FIELD:
                rest.append(r)
                continue
            got = self.decoder.unlabelled(r.record)
            if got is None:
                rest.append(r)
            elif isinstance(got[0], Reason):
                rest.append(Rejection(r.record, got[0], got[1]))
            else:
                self.unlabelled += 1
                self.joiner.add_features(got[0], np.asarray(got[1], np.float32), r.record, now)
        return rest

    def take_rows(self, rows: Unlabelled, now: float) -> None:
        """Unlabelled events decoded already (:meth:`JoinDecoder.decode`) join."""
        self.unlabelled += len(rows)
        self.joiner.add_features_many(rows, now)

    def take_records(self, records: Sequence[RawRecord], now: float) -> list[Rejection]:
        """Label records and logged predictions, as read; returns the invalid ones."""
        if not records:
            return []
        return self.take_side(decode_side(self.decoder, records, self.topic), now)

    def take_side(self, side: SideRecords, now: float) -> list[Rejection]:
        """Label records and logged predictions decoded (:func:`decode_side`); their positions
        become the join's. Returns the invalid ones."""
        for topic, read in side.positions.items():
            pos = self.positions.setdefault(topic, {})
            for p, o in read.items():
                pos[p] = max(pos.get(p, 0), o)
        if side.labels is not None:
            self.labels += len(side.labels)
            self.joiner.add_labels(side.labels, now)
        for eid, row, version, scores, rec in side.predictions:
            self.unlabelled += 1
            served = Served(version, np.asarray(scores, np.float32))
            self.joiner.add_features(eid, np.asarray(row, np.float32), rec, now, served)
        return side.rejections

    def take(self, now: float) -> tuple[EventBatch | None, list[tuple[RawRecord, str, str]]]:
        """Expire what waited too long; then the joined examples to learn (None: none) and the
        records to dead-letter, and score the served predictions that met their label."""
        self.joiner.expire(now)
        out = self.joiner.take()
        for served, y in out.served:
            self.served.update(served, y)
        for d in out.delays:
            self.delay.observe(d)
        if not out.ids:
            return None, out.dead_letters
        n = len(out.ids)
        batch = EventBatch(
            out.X,
            np.asarray(out.y, self.y_dtype),
            out.ids,
            out.partitions,
            out.offsets,
            (None,) * n,
        )
        return batch, out.dead_letters

    def state_dict(self) -> dict[str, Any]:
        return {
            "join": self.joiner.state_dict(),
            "positions": {t: dict(p) for t, p in self.positions.items()},
            "served": self.served.state_dict(),
            "rejected": dict(self.rejected),
            "unlabelled": self.unlabelled,
            "labels": self.labels,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.joiner.load_state_dict(state["join"])
        for topic, pos in state["positions"].items():
            self.positions[str(topic)] = {int(p): int(o) for p, o in pos.items()}
        self.served.load_state_dict(state["served"])
        self.rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})
        self.unlabelled = int(state["unlabelled"])
        self.labels = int(state["labels"])
