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


class Vocabulary:
    """One key-to-row map per category or tokens feature of ``layout``."""

    def __init__(self, layout: FeatureLayout):
        self.tables = layout.tables
        self.maps: list[dict[int, int]] = [{} for _ in self.tables]

    def __len__(self) -> int:
        return sum(len(m) for m in self.maps)

    def rows(self, K: np.ndarray, add: bool) -> np.ndarray:
        """Global table rows ``(n, n_keys)`` for the key columns ``K`` (-1: no value); with
        ``add``, keys not learned yet join the vocabulary while it has room."""
        out = np.full(K.shape, -1, np.int64)
        start = 0
        for t, vocab in zip(self.tables, self.maps, strict=True):
            width = len(t.columns)
            flat = K[:, start : start + width].ravel()
            uniq, first, inv = np.unique(flat, return_index=True, return_inverse=True)
            mapped = np.empty(len(uniq), np.int64)
            for j in np.argsort(first, kind="stable"):  # first come, first served
                key = float(uniq[j])
                if key < 0:
                    mapped[j] = -1
                    continue
                if key == MISSING_KEY:
                    mapped[j] = t.offset
                    continue
                k = int(key)
                row = vocab.get(k)
                if row is None and add and len(vocab) < t.vocabulary:
                    row = vocab[k] = len(vocab)
                if row is None:
                    mapped[j] = t.offset + 1 + t.vocabulary + k % t.buckets
                else:
                    mapped[j] = t.offset + 1 + row
            out[:, start : start + width] = mapped[inv.reshape(-1)].reshape(len(K), width)
            start += width
        return out

    def copy(self) -> Vocabulary:
        other = Vocabulary.__new__(Vocabulary)
        other.tables = self.tables
        other.maps = [dict(m) for m in self.maps]
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
