from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from learnd.daemon.events.batching import MicroBatcher
from learnd.daemon.events.decoder import EventBatch


def rows(start, n):
    return EventBatch(
        np.arange(start, start + n, dtype=np.float32).reshape(-1, 1),
        np.zeros(n, np.float32),
        tuple(range(start, start + n)),
        np.zeros(n, np.int32),
        np.arange(start, start + n, dtype=np.int64),
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 64), st.lists(st.integers(0, 200), max_size=20))
def test_batches_keep_order_lose_nothing_and_respect_size(size, chunks):
    b = MicroBatcher(size, max_age_s=10.0)
    out, start = [], 0
    for n in chunks:
        b.add(rows(start, n), now=0.0)
        start += n
        out += list(b.ready(now=0.0))
    assert all(len(x) == size for x in out), "before the age limit only full batches flush"
    out += list(b.drain())
    ids = [i for x in out for i in x.ids]
    assert ids == list(range(start))
    assert all(1 <= len(x) <= size for x in out)
    assert len(b) == 0


def test_partial_batch_flushes_on_age_only():
    b = MicroBatcher(10, max_age_s=0.5)
    b.add(rows(0, 3), now=100.0)
    assert list(b.ready(now=100.4)) == []
    b.add(rows(3, 2), now=100.45)
    flushed = list(b.ready(now=100.5))
    assert [x.ids for x in flushed] == [(0, 1, 2, 3, 4)]
    assert len(b) == 0
