"""A fixed-bucket histogram of durations, kept by the core and read at scrape time.

Examples
--------
>>> h = Histogram((0.01, 0.1))
>>> for s in (0.005, 0.05, 0.5):
...     h.observe(s)
>>> h.cumulative(), h.count, round(h.sum, 3)
([1, 2], 3, 0.555)
"""

from __future__ import annotations

import bisect

# Seconds from a candidate frozen to it serving: one micro-batch later while events flow
# (milliseconds), up to ``learning.batch_max_age_s`` when the stream has stopped.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = PUBLISH_BUCKETS):
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last: above every bucket
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """Observations at or below each bucket bound (Prometheus's ``le`` counts)."""
        out, total = [], 0
        for c in self._counts[:-1]:
            total += c
            out.append(total)
        return out
