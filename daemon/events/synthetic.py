"""A seeded synthetic stream with abrupt concept drift, for the demo and the tests.

river's SEA generator (three features in [0, 10], the label says whether ``x1 + x2`` exceeds a threshold), with
the concept (SEA variant, i.e. the threshold) switched every ``switch_every`` events.

Examples
--------
>>> s = DriftingSEA(seed=1, switch_every=3)
>>> [e["concept"] for e in s.take(7)]
[0, 0, 0, 1, 1, 1, 2]
>>> sorted(next(iter(s.take(1)))["features"])
['x1', 'x2', 'x3']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from river.datasets import synth

FEATURES = ("x1", "x2", "x3")
# SEA thresholds are 8, 9, 7 and 9.5 for variants 0..3; this order makes every switch visible.
VARIANT_ORDER = (0, 2, 3, 1)


class DriftingSEA:
    def __init__(self, seed: int = 42, switch_every: int = 20_000, noise: float = 0.05):
        self.seed = seed
        self.switch_every = switch_every
        self.noise = noise

    def __iter__(self) -> Iterator[dict]:
        n = 0
        for concept in itertools.count():
            variant = VARIANT_ORDER[concept % len(VARIANT_ORDER)]
            gen = synth.SEA(variant=variant, noise=self.noise, seed=self.seed + concept)
            for x, y in itertools.islice(gen, self.switch_every):
                yield {
                    "id": n,
                    "features": {k: float(x[i]) for i, k in enumerate(FEATURES)},
                    "label": int(y),
                    "concept": concept,
                }
                n += 1

    def take(self, n: int) -> Iterator[dict]:
        return itertools.islice(iter(self), n)
