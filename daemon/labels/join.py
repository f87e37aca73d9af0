"""The label join: feature rows wait by ``id`` for their label, labels wait for their features.

Every row ends in exactly one way: matched (learned with its label), expired (dropped), or
learned with the default label; an eviction past ``labels.max_pending`` is an early expiry.
A label ends matched, duplicate (its id was matched already) or orphan (its features never
came): duplicates and orphans are dead-lettered, never learned. The whole state is plain arrays
and lists (:meth:`Joiner.state_dict`), saved in the same checkpoint as the model.

Time is the caller's wall clock in seconds (``now``), so pending rows keep their age across a
restart.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config_labels import LabelsConfig
>>> from learnd.daemon.events.record import Record
>>> j = Joiner(LabelsConfig(mode="join", ttl_s=10), dim=2)
>>> j.add_features("a", np.array([1.0, 2.0], np.float32), Record("ev", 0, 5, None), now=0.0)
>>> j.add_label("a", 1.0, Record("lab", 0, 0, b"{}"), now=3.0)
>>> out = j.take()
>>> out.ids, out.y, out.delays, j.outcomes["matched"]
(('a',), [1.0], [3.0], 1)
>>> j.add_label("a", 0.0, Record("lab", 0, 1, b"{}"), now=4.0)
>>> [d[1] for d in j.take().dead_letters], j.outcomes["duplicate"]
(['duplicate_label'], 1)
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from learnd.daemon.config_labels import LabelsConfig
from learnd.daemon.events.record import RawRecord, Record

if TYPE_CHECKING:
    from learnd.daemon.labels.rows import Unlabelled
    from learnd.daemon.labels.side_records import Labels

OUTCOMES = ("matched", "expired", "default_label", "duplicate", "orphan")


class JoinReason(StrEnum):
    """Why a record of the join was dead-lettered (a closed set: a metric label)."""

    DUPLICATE_LABEL = "duplicate_label"
    ORPHAN_LABEL = "orphan_label"
    DUPLICATE_ID = "duplicate_id"


@dataclass(frozen=True, slots=True)
class Served:
    """What serving answered for a logged prediction: the version and its output row."""

    version: int
    scores: np.ndarray


@dataclass
class JoinOutput:
    """What the join produced since the last :meth:`Joiner.take`: rows to learn (in the order
    they were joined), records to dead-letter, label delays, and served predictions scored."""

    X: np.ndarray
    y: list[Any]
    ids: tuple[Any, ...]
    partitions: np.ndarray
    offsets: np.ndarray
    dead_letters: list[tuple[RawRecord, str, str]] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    served: list[tuple[Served, Any]] = field(default_factory=list)


class Joiner:
    """Pending feature rows by id, in arrival order, in arrays of up to ``max_pending`` rows."""

    def __init__(self, cfg: LabelsConfig, dim: int, default_y: Any = None, n_scores: int = 1):
        self.cfg = cfg
        self.dim = dim
        self.default_y = default_y  # the parsed labels.default_label (None: drop on expiry)
        self.n_scores = n_scores
        self.outcomes: Counter[str] = Counter({o: 0 for o in OUTCOMES})
        self.evicted = 0  # rows expired early because max_pending was reached
        self._slot: OrderedDict[Hashable, int] = OrderedDict()  # id -> row, oldest first
        self._free: list[int] = []
        cap = min(cfg.max_pending, 1024)
        self._X = np.zeros((cap, dim), np.float32)
        self._at = np.zeros(cap, np.float64)
        self._part = np.zeros(cap, np.int32)
        self._off = np.zeros(cap, np.int64)
        self._version = np.full(cap, -1, np.int64)  # -1: not a served prediction
        self._scores = np.zeros((cap, n_scores), np.float32)
        self._used = 0  # rows ever allocated (the rest of the arrays is spare capacity)
        self._early: OrderedDict[Hashable, tuple[Any, float, Record]] = OrderedDict()
        self._matched: OrderedDict[Hashable, None] = OrderedDict()
        self._reset_output()

    # -- input -------------------------------------------------------------------------------

    def add_features(
        self,
        eid: Hashable,
        row: np.ndarray,
        record: RawRecord,
        now: float,
        served: Served | None = None,
    ) -> None:
        """A feature row for ``eid`` (an unlabelled event, or a logged prediction)."""
        if eid in self._slot or eid in self._matched:
            self._dead.append(
                (record, JoinReason.DUPLICATE_ID.value, f"features for id {eid!r} came already")
            )
            self.outcomes["duplicate"] += 1
            return
        early = self._early.pop(eid, None)
        if early is not None:  # its label came first
            self._emit(eid, row, early[0], record.partition, record.offset)
            self._delays.append(max(0.0, early[1] - now))
            self._score(served, early[0])
            self._remember(eid)
            self.outcomes["matched"] += 1
            return
        if len(self._slot) >= self.cfg.max_pending:
            self.evicted += 1
            self._expire_oldest()
        i = self._alloc()
        self._X[i] = row
        self._at[i] = now
        self._part[i] = record.partition
        self._off[i] = record.offset
        if served is None:
            self._version[i] = -1
        else:
            self._version[i] = served.version
            self._scores[i] = served.scores
        self._slot[eid] = i

    def add_features_many(self, rows: Unlabelled, now: float) -> None:
        """:meth:`add_features` for each of ``rows`` in turn (no served predictions), with the
        arrays written once for them all."""
        n = len(rows)
        if len(self._slot) + n > self.cfg.max_pending:  # evictions between them: one by one
            for k in range(n):
                self.add_features(rows.ids[k], rows.X[k], _record(rows, k), now)
            return
        slot, matched, early = self._slot, self._matched, self._early
        waiting: list[int] = []  # of rows: those that wait for their label ...
        slots: list[int] = []  # ... in these slots
        joined: list[int] = []  # of rows: those whose label came first, in order
        for k, eid in enumerate(rows.ids):
            if eid in slot or eid in matched:
                self._dead.append(
                    (
                        _record(rows, k),
                        JoinReason.DUPLICATE_ID.value,
                        f"features for id {eid!r} came already",
                    )
                )
                self.outcomes["duplicate"] += 1
                continue
            got = early.pop(eid, None)
            if got is not None:
                joined.append(k)
                self._ys.append(got[0])
                self._ids.append(eid)
                self._parts.append(int(rows.partitions[k]))
                self._offs.append(int(rows.offsets[k]))
                self._delays.append(max(0.0, got[1] - now))
                self._remember(eid)
                self.outcomes["matched"] += 1
                continue
            i = self._alloc()
            slot[eid] = i
            waiting.append(k)
            slots.append(i)
        if joined:
            self._rows.append(rows.X[joined])
        if slots:
            at, to = np.asarray(waiting, np.intp), np.asarray(slots, np.intp)
            self._X[to] = rows.X[at]
            self._at[to] = now
            self._part[to] = rows.partitions[at]
            self._off[to] = rows.offsets[at]
            self._version[to] = -1

    def add_label(self, eid: Hashable, y: Any, record: RawRecord, now: float) -> None:
        """A label for ``eid``: learned with its features now, or held until they come."""
        i = self._slot.pop(eid, None)
        if i is not None:
            self._emit(eid, self._X[i], y, int(self._part[i]), int(self._off[i]))
            self._delays.append(max(0.0, now - float(self._at[i])))
            self._score(self._served_at(i), y)
            self._free.append(i)
            self._remember(eid)
            self.outcomes["matched"] += 1
            return
        self._unmatched_label(eid, y, record, now)

    def _unmatched_label(self, eid: Hashable, y: Any, record: RawRecord, now: float) -> None:
        """A label no row waits for: a duplicate, an orphan, or held until its features come."""
        if eid in self._matched or eid in self._early:
            self._dead.append(
                (record, JoinReason.DUPLICATE_LABEL.value, f"id {eid!r} has a label already")
            )
            self.outcomes["duplicate"] += 1
            return
        if self.cfg.max_early_labels == 0:
            self._orphan(record, eid, "no features wait for it")
            return
        if len(self._early) >= self.cfg.max_early_labels:
            old_id, (_, _, old_rec) = self._early.popitem(last=False)
            self._orphan(old_rec, old_id, "dropped for labels.max_early_labels")
        self._early[eid] = (y, now, _plain_record(record))

    def add_labels(self, labels: Labels, now: float) -> None:
        """:meth:`add_label` for each of ``labels`` in turn, with the matched rows read from the
        arrays once for them all."""
        slot = self._slot
        rows: list[int] = []  # slots of the rows matched, in order
        for k, eid in enumerate(labels.ids):
            i = slot.pop(eid, None)
            if i is None:
                self._unmatched_label(eid, labels.y[k], labels.record(k), now)
                continue
            rows.append(i)
            self._ys.append(labels.y[k])
            self._ids.append(eid)
            self._remember(eid)
        if not rows:
            return
        # no row is allocated above: the slots freed here are read before any is reused
        at = np.asarray(rows, np.intp)
        self._free.extend(rows)
        self._rows.append(self._X[at])
        self._parts.extend(self._part[at].tolist())
        self._offs.extend(self._off[at].tolist())
        self._delays.extend(np.maximum(0.0, now - self._at[at]).tolist())
        self.outcomes["matched"] += len(rows)
        if (self._version[at] >= 0).any():
            start = len(self._ys) - len(rows)
            for n, i in enumerate(rows):
                self._score(self._served_at(i), self._ys[start + n])

    def expire(self, now: float) -> None:
        """Expire feature rows and early labels that have waited ``labels.ttl_s`` or longer."""
        deadline = now - self.cfg.ttl_s
        while self._slot:
            eid, i = next(iter(self._slot.items()))
            if self._at[i] > deadline:
                break
            self._expire_oldest()
        while self._early:
            eid, (_, at, rec) = next(iter(self._early.items()))
            if at > deadline:
                break
            del self._early[eid]
            self._orphan(rec, eid, f"no features came within labels.ttl_s={self.cfg.ttl_s:g}")

    # -- output ------------------------------------------------------------------------------

    def take(self) -> JoinOutput:
        """Everything produced since the last call (then the buffers are empty again)."""
        n = len(self._ids)
        X = np.concatenate(self._rows) if self._rows else np.zeros((0, self.dim), np.float32)
        assert len(X) == n
        out = JoinOutput(
            X,
            self._ys,
            tuple(self._ids),
            np.asarray(self._parts, np.int32),
            np.asarray(self._offs, np.int64),
            self._dead,
            self._delays,
            self._served,
        )
        self._reset_output()
        return out

    @property
    def pending(self) -> int:
        """Feature rows waiting for their label."""
        return len(self._slot)

    @property
    def early_labels(self) -> int:
        """Labels waiting for their features."""
        return len(self._early)

    # -- checkpoint --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The pending rows, the early labels and the matched ids, as plain values; call
        :meth:`take` first (a checkpoint never holds joined rows not yet learned)."""
        if self._ids or self._dead:
            raise RuntimeError("Joiner.state_dict() with output not taken: call take() first")
        rows = np.fromiter(self._slot.values(), np.int64, len(self._slot))
        return {
            "ids": list(self._slot),
            "X": self._X[rows].copy(),
            "at": self._at[rows].copy(),
            "partition": self._part[rows].copy(),
            "offset": self._off[rows].copy(),
            "version": self._version[rows].copy(),
            "scores": self._scores[rows].copy(),
            "early": [
                [eid, y, at, r.topic, r.partition, r.offset, _text(r.value)]
                for eid, (y, at, r) in self._early.items()
            ],
            "matched": list(self._matched),
            "outcomes": dict(self.outcomes),
            "evicted": self.evicted,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ids = list(state["ids"])
        n = len(ids)
        self._slot.clear()
        self._free.clear()
        self._used = 0
        self._grow(n)
        for name, arr in (
            ("X", self._X),
            ("at", self._at),
            ("partition", self._part),
            ("offset", self._off),
            ("version", self._version),
            ("scores", self._scores),
        ):
            arr[:n] = np.asarray(state[name]).reshape(arr[:n].shape)
        self._slot.update(zip(ids, range(n), strict=True))
        self._used = n
        self._early = OrderedDict(
            (eid, (y, float(at), Record(t, int(p), int(o), _bytes(v))))
            for eid, y, at, t, p, o, v in state["early"]
        )
        self._matched = OrderedDict.fromkeys(state["matched"])
        self.outcomes = Counter({o: 0 for o in OUTCOMES})
        self.outcomes.update({str(k): int(v) for k, v in state["outcomes"].items()})
        self.evicted = int(state["evicted"])

    # -- internals ---------------------------------------------------------------------------

    def _reset_output(self) -> None:
        self._rows: list[np.ndarray] = []  # blocks of rows (n, dim), in the order of _ids
        self._ys: list[Any] = []
        self._ids: list[Any] = []
        self._parts: list[int] = []
        self._offs: list[int] = []
        self._dead: list[tuple[RawRecord, str, str]] = []
        self._delays: list[float] = []
        self._served: list[tuple[Served, Any]] = []

    def _emit(self, eid: Any, row: np.ndarray, y: Any, partition: int, offset: int) -> None:
        self._rows.append(np.array(row, np.float32).reshape(1, self.dim))
        self._ys.append(y)
        self._ids.append(eid)
        self._parts.append(partition)
        self._offs.append(offset)

    def _served_at(self, i: int) -> Served | None:
        v = int(self._version[i])
        return None if v < 0 else Served(v, self._scores[i].copy())

    def _score(self, served: Served | None, y: Any) -> None:
        if served is not None:
            self._served.append((served, y))

    def _remember(self, eid: Hashable) -> None:
        if self.cfg.remember_matched == 0:
            return
        self._matched[eid] = None
        if len(self._matched) > self.cfg.remember_matched:
            self._matched.popitem(last=False)

    def _orphan(self, record: RawRecord, eid: Any, why: str) -> None:
        self._dead.append((record, JoinReason.ORPHAN_LABEL.value, f"label for id {eid!r}: {why}"))
        self.outcomes["orphan"] += 1

    def _expire_oldest(self) -> None:
        eid, i = self._slot.popitem(last=False)
        self._free.append(i)
        if self.default_y is None:
            self.outcomes["expired"] += 1
            return
        self._emit(eid, self._X[i], self.default_y, int(self._part[i]), int(self._off[i]))
        self._remember(eid)
        self.outcomes["default_label"] += 1

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        self._grow(self._used + 1)
        self._used += 1
        return self._used - 1

    def _grow(self, need: int) -> None:
        cap = len(self._at)
        if need <= cap:
            return
        new = min(max(need, 2 * cap), max(need, self.cfg.max_pending))
        for name in ("_X", "_at", "_part", "_off", "_version", "_scores"):
            old = getattr(self, name)
            grown = np.zeros((new, *old.shape[1:]), old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)


def _record(rows: Unlabelled, k: int) -> Record:
    return Record(rows.topic, int(rows.partitions[k]), int(rows.offsets[k]), rows.raw[k])


def _plain_record(r: RawRecord) -> Record:
    if type(r) is Record:  # plain already (and frozen): kept as it is
        return r
    return Record(r.topic, r.partition, r.offset, r.value, r.key)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")
