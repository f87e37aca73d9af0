"""The one hot-swap mechanism: immutable snapshots behind a single atomically replaced reference.

Serving reads :attr:`SnapshotRef.current` once per request and computes the whole answer from
that object, so an answer always names the version that produced it, and a swap never blocks
or breaks a request in flight.

Examples
--------
>>> import numpy as np
>>> from daemon.learner import DenseWeights
>>> w = DenseWeights((np.ones((2, 1), np.float32),), (np.zeros(1, np.float32),), "relu",
...                  np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 1.0)
>>> ref = SnapshotRef(keep=3)
>>> snap = ref.publish(Draft("binary", (0, 1), None, w, trained_events=0, metrics={}))
>>> snap.version, ref.current.version
(1, 1)
>>> snap.predict_many(np.array([[1.0, 1.0]])).astype(float).round(3).tolist()
[[0.119, 0.881]]
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from daemon.learner import DenseWeights


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float32, copy=True)
    a.flags.writeable = False
    return a


def _activation(name: str):
    if name == "relu":
        return lambda z: np.maximum(z, 0.0, out=z)
    return lambda z: np.tanh(z, out=z)


@dataclass(frozen=True, slots=True)
class Draft:
    """A model ready to publish, before it has a version."""

    task: str
    classes: tuple
    feature_names: tuple[str, ...] | None
    weights: DenseWeights
    trained_events: int
    metrics: Mapping[str, float]
    form: str = "dense-fp32"


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    task: str
    classes: tuple
    feature_names: tuple[str, ...] | None
    trained_events: int
    metrics: Mapping[str, float]
    form: str
    published_unix: float
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str
    x_mean: np.ndarray
    x_inv_std: np.ndarray
    y_mean: float
    y_std: float
    n_parameters: int = field(default=0)

    @classmethod
    def from_draft(cls, draft: Draft, version: int) -> Snapshot:
        w = draft.weights
        weights = tuple(_frozen(a) for a in w.weights)
        biases = tuple(_frozen(b) for b in w.biases)
        return cls(
            version=version,
            task=draft.task,
            classes=tuple(draft.classes),
            feature_names=draft.feature_names,
            trained_events=draft.trained_events,
            metrics=MappingProxyType(dict(draft.metrics)),
            form=draft.form,
            published_unix=time.time(),
            weights=weights,
            biases=biases,
            activation=w.activation,
            x_mean=_frozen(w.x_mean),
            x_inv_std=_frozen(w.x_inv_std),
            y_mean=float(w.y_mean),
            y_std=float(w.y_std),
            n_parameters=sum(a.size for a in weights) + sum(b.size for b in biases),
        )

    @property
    def size_bytes(self) -> int:
        """Bytes of the served arrays (weights, biases, input scaling)."""
        arrays = (*self.weights, *self.biases, self.x_mean, self.x_inv_std)
        return int(sum(a.nbytes for a in arrays))

    @property
    def sparsity(self) -> float:
        """Share of weight entries that are exactly zero."""
        total = sum(w.size for w in self.weights)
        zeros = sum(int(w.size - np.count_nonzero(w)) for w in self.weights)
        return zeros / total if total else 0.0

    @property
    def dim(self) -> int:
        return len(self.x_mean)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` for classification, values ``(n,)`` for regression."""
        z = (np.asarray(X, np.float32) - self.x_mean) * self.x_inv_std
        act = _activation(self.activation)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = z @ w
            z += b
            if i < last:
                z = act(z)
        if self.task == "binary":
            p = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))  # the logistic, without overflow
            return np.stack([1.0 - p, p], axis=1)
        if self.task == "multiclass":
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            return z
        return z[:, 0] * self.y_std + self.y_mean

    def info(self) -> dict:
        return {
            "version": self.version,
            "task": self.task,
            "classes": list(self.classes),
            "features": list(self.feature_names) if self.feature_names else None,
            "n_features": self.dim,
            "form": self.form,
            "n_parameters": self.n_parameters,
            "trained_events": self.trained_events,
            "published_unix": self.published_unix,
            "metrics": dict(self.metrics),
        }


class SnapshotRef:
    """Holds the served snapshot. Readers take ``current`` (one attribute read, atomic);
    publishers serialise on a lock so versions only ever increase."""

    def __init__(self, keep: int = 5, first_version: int = 1):
        self._current: Snapshot | None = None
        self._lock = threading.Lock()
        self._history: deque[Snapshot] = deque(maxlen=keep)
        self._next_version = first_version

    @property
    def current(self) -> Snapshot | None:
        return self._current

    @property
    def next_version(self) -> int:
        return self._next_version

    def continue_from(self, next_version: int) -> None:
        """After a restart, keep numbering where the checkpointed run stopped."""
        with self._lock:
            self._next_version = max(self._next_version, next_version)

    def publish(self, draft: Draft) -> Snapshot:
        """Freeze ``draft`` as the next version and make it the served one."""
        if not draft.weights.is_finite():
            raise ValueError("refusing to publish a model with non-finite weights")
        with self._lock:
            snap = Snapshot.from_draft(draft, self._next_version)
            self._next_version += 1
            self._history.append(snap)
            self._current = snap
            return snap

    def history(self) -> tuple[Snapshot, ...]:
        return tuple(self._history)
