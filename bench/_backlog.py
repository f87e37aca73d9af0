"""learnd behind the log, the way the daemon catches up: the whole stream already in the log,
read in polls of ``chunk`` records and handed to ``Pipeline.process`` as the consumer process
hands them over, the pipeline told before each poll how much is left in the log (as
``Service.step`` tells it the source's lag). So the catch-up pace (batch sizes from the lag and
``learning.catch_up_s``), rehearsal (only within ``learning.replay.max_lag``) and publishing run
as in the daemon, on the real clock."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from learnd.daemon.events.decoder import Decoded, EventBatch


def learn_backlog(pipe, X, y, chunk: int = 500) -> tuple[float, Counter]:
    """Learn ``X, y`` as a full backlog; returns the seconds it took and the events learned per
    batch size."""
    pipe.clock = time.perf_counter  # the pace measures real steps
    X = np.ascontiguousarray(X, np.float32)
    n = len(y)
    sizes: Counter = Counter()
    learn_many = pipe.learner.learn_many

    def counting(Xb, yb):
        sizes[len(yb)] += len(yb)
        return learn_many(Xb, yb)

    pipe.learner.learn_many = counting
    t0 = time.perf_counter()
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        pipe.set_backlog({0: n - j})
        events = EventBatch(
            X[i:j], y[i:j], (None,) * (j - i), np.zeros(j - i, np.int32), np.arange(i, j)
        )
        pipe.process(Decoded(events, [], {0: j}))
        pipe.tick()
    pipe.flush()
    return time.perf_counter() - t0, sizes
