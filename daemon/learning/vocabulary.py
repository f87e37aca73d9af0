"""Category keys to embedding rows: a vocabulary learned online up to a cap, then hashed buckets.

Each category or tokens feature owns a range of rows in one table
(:class:`learnd.daemon.config_schema.TableSpec`): row 0 of the range is "missing", the next
``vocabulary`` rows go to values in the order they are first learned (within a batch, in event
order), and every later value shares one of ``buckets`` rows, ``key % buckets``. A value that
has not been learned yet is predicted with its bucket. numpy only: serving processes use it too.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config_schema import FeatureLayout, FeatureSpec
>>> lay = FeatureLayout.of({"c": FeatureSpec(type="category", vocabulary=2, buckets=4)})
>>> voc = Vocabulary(lay)
>>> K = np.array([[7.0], [9.0], [7.0], [16777216.0]], np.float32)
>>> voc.rows(K, add=False).ravel().tolist()  # not learned yet: buckets 7 % 4 and 9 % 4; missing
[6, 4, 6, 0]
>>> voc.rows(K, add=True).ravel().tolist()
[1, 2, 1, 0]
>>> voc.rows(np.array([[11.0]], np.float32), add=True).ravel().tolist()  # the cap is reached
[6]
"""

from __future__ import annotations

import numpy as np

from learnd.daemon.config_schema import MISSING_KEY, FeatureLayout

SMALL = 16  # at most this many keys are looked up one by one


class Vocabulary:
    """One key-to-row map per category or tokens feature of ``layout``."""

    def __init__(self, layout: FeatureLayout):
        self.tables = layout.tables
        self.maps: list[dict[int, int]] = [{} for _ in self.tables]
        self._cache: list[tuple[np.ndarray, np.ndarray] | None] = [None for _ in self.tables]

    def __len__(self) -> int:
        return sum(len(m) for m in self.maps)

    def has_room(self) -> bool:
        """Whether some feature's vocabulary can still learn a key (when none can, ``rows``
        with ``add`` gives what it gives without)."""
        return any(len(m) < t.vocabulary for t, m in zip(self.tables, self.maps, strict=True))

    def rows(self, K: np.ndarray, add: bool) -> np.ndarray:
        """Global table rows ``(n, n_keys)`` for the key columns ``K`` (-1: no value); with
        ``add``, keys not learned yet join the vocabulary while it has room."""
        if K.size <= SMALL and not add:
            return self._rows_small(K)
        out = np.empty(K.shape, np.int64)
        start = 0
        for i, t in enumerate(self.tables):
            width = len(t.columns)
            block = K[:, start : start + width]
            if add and len(self.maps[i]) < t.vocabulary:
                self._learn(i, block.ravel())
            out[:, start : start + width] = self._lookup(i, block)
            start += width
        return out

    def _rows_small(self, K: np.ndarray) -> np.ndarray:
        """:meth:`rows` of a few keys (a served request), key by key: cheaper than the
        dozen array operations of the batch path."""
        out: list[int] = []
        for row in K.tolist():
            out += self.row_list(row)
        return np.array(out, np.int64).reshape(K.shape)

    def row_list(self, keys: list[float]) -> list[int]:
        """The rows of one event's key columns (as :meth:`rows` without ``add``), as ints."""
        out = []
        start = 0
        for t, vocab in zip(self.tables, self.maps, strict=True):
            base = t.offset + 1
            for key in keys[start : start + len(t.columns)]:
                if key < 0:
                    out.append(-1)
                elif key == MISSING_KEY:
                    out.append(t.offset)
                else:
                    k = int(key)
                    r = vocab.get(k)
                    out.append(base + r if r is not None else base + t.vocabulary + k % t.buckets)
            start += len(t.columns)
        return out

    def _sorted(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The learned keys of table ``i``, sorted, and their rows (rebuilt after a change)."""
        cached = self._cache[i]
        if cached is None:
            keys = np.fromiter(self.maps[i], np.int64, len(self.maps[i]))
            order = np.argsort(keys)
            cached = self._cache[i] = (keys[order], order.astype(np.int64))  # rows: insertion
        return cached

    def _lookup(self, i: int, block: np.ndarray) -> np.ndarray:
        t = self.tables[i]
        k = block.astype(np.int64)
        rows = t.offset + 1 + t.vocabulary + np.mod(k, t.buckets)
        keys, vals = self._sorted(i)
        if len(keys):
            pos = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
            found = keys[pos] == k
            rows = np.where(found, t.offset + 1 + vals[pos], rows)
        rows[block == MISSING_KEY] = t.offset
        rows[block < 0] = -1
        return rows

    def _learn(self, i: int, flat: np.ndarray) -> None:
        """Add the keys of ``flat`` not learned yet, first come first served, while there is
        room."""
        vocab, cap = self.maps[i], self.tables[i].vocabulary
        fresh = (flat >= 0) & (flat != MISSING_KEY)
        uniq, first = np.unique(flat[fresh], return_index=True)
        for key in uniq[np.argsort(first, kind="stable")].astype(np.int64).tolist():
            if len(vocab) >= cap:
                break
            if key not in vocab:
                vocab[key] = len(vocab)
                self._cache[i] = None

    def copy(self) -> Vocabulary:
        other = Vocabulary.__new__(Vocabulary)
        other.tables = self.tables
        other.maps = [dict(m) for m in self.maps]
        other._cache = list(self._cache)  # the arrays are never written in place
        return other

    def state_dict(self) -> dict:
        """Each feature's learned keys in row order (plain int64 arrays)."""
        return {
            t.name: np.fromiter(m, np.int64, len(m))
            for t, m in zip(self.tables, self.maps, strict=True)
        }

    def load_state_dict(self, state: dict) -> None:
        maps = []
        for t in self.tables:
            keys = np.asarray(state.get(t.name, ()), np.int64)[: t.vocabulary]
            maps.append({int(k): i for i, k in enumerate(keys.tolist())})
        self.maps = maps
        self._cache = [None for _ in self.tables]
