"""Unlabelled events and labels decoded once, where they are read, into columns the join takes
as they are: the same rows, rejections and join outcomes as decoding and joining them one by
one."""

from __future__ import annotations

import numpy as np
import pytest

from learnd.daemon.config import SchemaConfig
from learnd.daemon.config_labels import LabelsConfig
from learnd.daemon.events.decoder import EventDecoder, Reason
from learnd.daemon.events.record import Record
from learnd.daemon.labels.join import Joiner, Served
from learnd.daemon.labels.records import JoinDecoder
from learnd.daemon.labels.rows import Unlabelled
from learnd.daemon.labels.side_records import Labels

SCHEMA = SchemaConfig(task="binary", features=("a", "b"))

MIXED = [
    b'{"id": 1, "features": {"a": 1, "b": 2}}',  # unlabelled
    b'{"id": 2, "features": {"a": 3, "b": 4}, "label": 1}',  # labelled
    b'{"features": {"a": 1, "b": 2}}',  # no id, no label
    b'{"id": true, "features": {"a": 1, "b": 2}}',  # a bool is no id
    b'{"id": 3, "features": {"a": 1}}',  # a feature missing
    b'{"id": "x", "features": [5, 6], "label": null}',  # unlabelled, features as a list
    b"not json",
    None,
    b'{"id": 4, "features": {"a": 1e39, "b": 0}}',  # out of range
]


def records(values, topic="ev", start=0):
    return [Record(topic, 0, start + i, v) for i, v in enumerate(values)]


def one_by_one(recs):
    """What the join was handed before: the event decoder's rejections, decoded again."""
    dec = JoinDecoder(SCHEMA)
    decoded = EventDecoder(SCHEMA).decode(recs)
    rows, rest = [], []
    for r in decoded.rejections:
        got = dec.unlabelled(r.record) if r.reason == Reason.MISSING_FIELD else None
        if got is None:
            rest.append((r.record.offset, r.reason, r.detail))
        elif isinstance(got[0], Reason):
            rest.append((r.record.offset, got[0], got[1]))
        else:
            rows.append((got[0], [float(v) for v in got[1]], r.record.offset))
    return decoded.events, rows, rest


@pytest.mark.parametrize("values", [MIXED, MIXED[:1] + MIXED[5:6], MIXED[1:2]])
def test_decode_hands_unlabelled_events_over_as_rows_with_the_same_rejections(values):
    recs = records(values)
    got = JoinDecoder(SCHEMA).decode(recs)
    events, rows, rest = one_by_one(recs)
    assert got.events.ids == events.ids and got.events.X.tolist() == events.X.tolist()
    assert [(r.record.offset, r.reason, r.detail) for r in got.rejections] == rest
    u = got.unlabelled
    if not rows:
        assert u is None
        return
    assert u is not None and u.topic == "ev" and u.X.dtype == np.float32
    assert list(zip(u.ids, u.X.tolist(), u.offsets.tolist(), strict=True)) == rows
    assert u.raw == tuple(values[o] for _, _, o in rows)
    assert got.positions == {0: len(values)}


def test_a_poll_of_unlabelled_events_only_rejects_none():
    values = [b'{"id": %d, "features": {"a": %d, "b": 0}}' % (i, i) for i in range(5)]
    got = JoinDecoder(SCHEMA).decode(records(values, start=10))
    assert got.rejections == [] and len(got.events) == 0 and len(got) == 5
    u = got.unlabelled
    assert u is not None and u.ids == (0, 1, 2, 3, 4)
    assert u.X[:, 0].tolist() == [0, 1, 2, 3, 4] and u.offsets.tolist() == [10, 11, 12, 13, 14]


def _labels(ids, step):
    n = len(ids)
    return Labels(
        "lab",
        tuple(ids),
        [float(i % 2) for i in ids],
        np.zeros(n, np.int32),
        np.full(n, step, np.int64),
        tuple(b"%d" % i for i in ids),
    )


def _rows(ids, start):
    n = len(ids)
    return Unlabelled(
        "ev",
        tuple(ids),
        np.stack([np.arange(start, start + n), -np.arange(start, start + n)], 1).astype(np.float32),
        np.full(n, start % 2, np.int32),
        np.arange(start, start + n, dtype=np.int64),
        tuple(b"%d" % i for i in ids),
    )


@pytest.mark.parametrize("max_pending", [1000, 7])  # 7: evictions between the rows of a batch
@pytest.mark.parametrize("default_y", [None, 0.0])
def test_rows_and_labels_taken_at_once_end_exactly_as_taken_one_by_one(max_pending, default_y):
    cfg = LabelsConfig(
        mode="join",
        ttl_s=5,
        max_pending=max_pending,
        max_early_labels=6,
        remember_matched=20,
        **({"on_expiry": "learn", "default_label": 0} if default_y is not None else {}),
    )
    at_once, each = (Joiner(cfg, dim=2, default_y=default_y, n_scores=2) for _ in range(2))
    rng = np.random.default_rng(4)
    outs: dict[int, list] = {0: [], 1: []}
    offset = 0
    for step in range(60):
        now = float(step)
        ids = [int(i) for i in rng.integers(0, 40, rng.integers(0, 6))]  # duplicates too
        rows = _rows(ids, offset)
        offset += len(ids)
        labels = [int(i) for i in rng.integers(0, 40, rng.integers(0, 4))]
        served = int(rng.integers(100, 140))  # a logged prediction, scored when its label comes
        for k, j in enumerate((at_once, each)):
            j.add_features(
                served,
                np.ones(2, np.float32),
                Record("p", 0, step, None),
                now,
                Served(step, np.array([0.3, 0.7], np.float32)),
            )
            labels = [*labels, served] if k == 0 and step % 3 == 0 else labels
            if k == 0:
                j.add_labels(_labels(labels, step), now)
            else:
                for i in labels:
                    j.add_label(i, float(i % 2), Record("lab", 0, step, b"%d" % i), now)
            if k == 0:
                j.add_features_many(rows, now)
            else:
                for r in range(len(ids)):
                    rec = Record("ev", int(rows.partitions[r]), int(rows.offsets[r]), rows.raw[r])
                    j.add_features(ids[r], rows.X[r], rec, now)
            j.expire(now)
            out = j.take()
            outs[k].append(
                (
                    out.ids,
                    out.X.tolist(),
                    out.y,
                    out.partitions.tolist(),
                    out.offsets.tolist(),
                    out.delays,
                    [(sv.version, sv.scores.tolist(), y) for sv, y in out.served],
                    [(d[0].offset, d[0].value, d[1], d[2]) for d in out.dead_letters],
                )
            )
    assert outs[0] == outs[1]
    assert sum(len(o[0]) for o in outs[0]) > 20  # the stream matched rows, both ways
    assert sum(len(o[7]) for o in outs[0]) > 5  # and scored served predictions
    a, b = at_once.state_dict(), each.state_dict()
    for key in ("X", "at", "partition", "offset", "version"):
        assert a[key].tolist() == b[key].tolist(), key
    assert {
        k: v
        for k, v in a.items()
        if k not in ("X", "at", "partition", "offset", "version", "scores")
    } == {
        k: v
        for k, v in b.items()
        if k not in ("X", "at", "partition", "offset", "version", "scores")
    }
