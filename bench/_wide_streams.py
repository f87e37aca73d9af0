"""The wide suite's streams, beside bench/_streams.py's seven: more classes, more noise,
gradual and recurring drift, and regression, seeded, as ``Stream`` arrays. Every one is built
offline (river's generators and the regression data sets river ships).

Classification: LED (10 classes, 10% noise, 17 irrelevant features) and LEDDrift (7 features
swapping); Waveform (3 classes, 19 noise features); RandomRBF (5 classes) and RandomRBFDrift
(centroids moving: gradual drift); SEA and Agrawal with a gradual switch
(``ConceptDriftStream``, 2,000 events wide); STAGGER and Mixed with concepts coming back
(A->B->A->B); RandomTree (3 classes); Hyperplane with 10% noise and a drift ten times faster.
Regression: Friedman; FriedmanDrift global-gradual and local-expanding-abrupt; TrumpApproval and
ChickWeights (river's files, whole).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from _streams import _arrays, streams
from river import datasets
from river.datasets import synth

GRADUAL = 2000  # the width of a gradual switch, in events


class Stream(NamedTuple):
    name: str
    X: np.ndarray  # float32
    y: np.ndarray  # class index (int64) or target (float32)
    labels: list | None  # None: regression
    switches: list[int]  # known switch points (a gradual one: its middle)

    @property
    def task(self) -> str:
        if self.labels is None:
            return "regression"
        return "binary" if len(self.labels) == 2 else "multiclass"


def _targets(pairs):
    xs, ys = [], []
    keys = None
    for x, y in pairs:
        keys = keys or sorted(x, key=str)
        xs.append([float(x[k]) for k in keys])
        ys.append(float(y))
    return np.nan_to_num(np.array(xs, np.float32)), np.array(ys, np.float32)


def _classes(name, pairs, switches=(), classes=None):
    X, y, labels = _arrays(pairs, classes)
    return Stream(name, X, y, labels, list(switches))


def _recurring(make, n, parts):
    per = n // len(parts)
    pairs = itertools.chain.from_iterable(itertools.islice(make(k), per) for k in parts)
    return pairs, [per * i for i in range(1, len(parts))]


def _gradual(first, second, n, seed):
    drift = synth.ConceptDriftStream(first, second, position=n // 2, width=GRADUAL, seed=seed)
    return drift.take(n), [n // 2]


def classification(n: int, seed: int = 7) -> list[Stream]:
    out = [
        _classes(
            "LED, 10 classes, 10% noise",
            synth.LED(seed=seed, noise_percentage=0.1, irrelevant_features=True).take(n),
        ),
        _classes(
            "LEDDrift, 7 features drifting",
            synth.LEDDrift(
                seed=seed, noise_percentage=0.1, irrelevant_features=True, n_drift_features=7
            ).take(n),
        ),
        _classes("Waveform, 3 classes, noise", synth.Waveform(seed=seed, has_noise=True).take(n)),
        _classes(
            "RandomRBF, 5 classes",
            synth.RandomRBF(seed_model=seed, seed_sample=seed, n_classes=5).take(n),
        ),
        _classes(
            "RandomRBFDrift, 5 classes, moving",
            synth.RandomRBFDrift(
                seed_model=seed,
                seed_sample=seed,
                n_classes=5,
                change_speed=0.001,
                n_drift_centroids=25,
            ).take(n),
        ),
        _classes(
            "SEA 0->2, gradual",
            *_gradual(synth.SEA(0, seed=seed, noise=0.05), synth.SEA(2, seed=seed), n, seed),
        ),
        _classes(
            "Agrawal 1->4, gradual",
            *_gradual(
                synth.Agrawal(classification_function=1, seed=seed),
                synth.Agrawal(classification_function=4, seed=seed),
                n,
                seed,
            ),
        ),
        _classes(
            "STAGGER 0->2->0->2, recurring",
            *_recurring(
                lambda f: synth.STAGGER(classification_function=f, seed=seed), n, [0, 2, 0, 2]
            ),
            classes=[0, 1],
        ),
        _classes(
            "Mixed 0->1->0->1, recurring",
            *_recurring(
                lambda f: synth.Mixed(classification_function=f, seed=seed), n, [0, 1, 0, 1]
            ),
            classes=[False, True],
        ),
        _classes(
            "RandomTree, 3 classes",
            synth.RandomTree(seed_tree=seed, seed_sample=seed, n_classes=3).take(n),
        ),
        _classes(
            "Hyperplane, 10% noise, fast drift",
            synth.Hyperplane(
                seed=seed, n_features=10, n_drift_features=5, mag_change=0.01, noise_percentage=0.1
            ).take(n),
        ),
    ]
    return out


def regression(n: int, seed: int = 7) -> list[Stream]:
    out = [Stream("Friedman", *_targets(synth.Friedman(seed=seed).take(n)), None, [])]
    for kind, name, parts in (("gra", "global, gradual", 3), ("lea", "local, expanding", 4)):
        at = tuple(n // parts * i for i in range(1, parts))
        gen = synth.FriedmanDrift(
            drift_type=kind, position=at, transition_window=GRADUAL, seed=seed
        )
        out.append(Stream(f"FriedmanDrift {name}", *_targets(gen.take(n)), None, list(at)))
    for name, ds in (
        ("TrumpApproval", datasets.TrumpApproval()),
        ("ChickWeights", datasets.ChickWeights()),
    ):
        out.append(Stream(name, *_targets(iter(ds)), None, []))
    return out


def suite(which: str, n: int, quick: bool = False, only=()) -> list[Stream]:
    """``which``: ``seven`` (bench/_streams.py), ``new`` (this file's), or ``all``."""
    out = []
    if which in ("seven", "all"):
        out += [Stream(*s) for s in streams(n, quick)]
    if which in ("new", "all"):
        out += classification(n) + regression(n)
    if only:
        out = [s for s in out if s.name.lower().startswith(tuple(o.lower() for o in only))]
        if not out:
            raise SystemExit(f"--streams {','.join(only)} names none of the {which} streams")
    return out
