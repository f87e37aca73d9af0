"""The one hot-swap mechanism: immutable snapshots behind a single atomically replaced reference.

Serving reads :attr:`SnapshotRef.current` once per request and computes the whole answer from
that object, so an answer always names the version that produced it, and a swap never blocks
or breaks a request in flight.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.serving.weights import DenseWeights
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from learnd.daemon.serving.forms import Forward, NumpyForward, frozen
from learnd.daemon.serving.typed_inputs import TypedInputs
from learnd.daemon.serving.weights import DenseWeights

_HALF, _ONE = np.float32(0.5), np.float32(1.0)


class VersionsExhausted(LookupError):
    """Every reserved version number is used; the next checkpoint reserves more."""


@dataclass(frozen=True, slots=True)
class Draft:
    """A model ready to publish, before it has a version. ``forward`` is the served form
    (:mod:`learnd.daemon.serving.compress`); None serves ``weights`` as dense numpy float32."""

    task: str
    classes: tuple
    feature_names: tuple[str, ...] | None
    weights: DenseWeights
    trained_events: int
    metrics: Mapping[str, float]
    forward: Forward | None = None
    latency_us: float = float("nan")  # measured batch-1 forward time of that form

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    task: str
    classes: tuple
    feature_names: tuple[str, ...] | None
    trained_events: int
    metrics: Mapping[str, float]
    published_unix: float
    forward: Forward
    x_mean: np.ndarray
    x_inv_std: np.ndarray
    y_mean: float
    y_std: float
    latency_us: float = float("nan")
    rolled_back_from: int | None = None
    typed: TypedInputs | None = None  # typed features: a request's row becomes the inputs

    @classmethod
    def from_draft(cls, draft: Draft, version: int) -> Snapshot:
        w = draft.weights
        forward = draft.forward
        if forward is None:
            forward = NumpyForward(w.weights, w.biases, w.activation)
        return cls(
            version=version,
            task=draft.task,
            classes=tuple(draft.classes),
            feature_names=draft.feature_names,
            trained_events=draft.trained_events,
            metrics=MappingProxyType(dict(draft.metrics)),
            published_unix=time.time(),
            forward=forward,
            x_mean=frozen(w.x_mean),
            x_inv_std=frozen(w.x_inv_std),
            y_mean=float(w.y_mean),
            y_std=float(w.y_std),
            latency_us=draft.latency_us,
            typed=w.typed,
        )

    @property
    def form(self) -> str:
        return self.forward.form

    @property
    def n_parameters(self) -> int:
        return self.forward.n_parameters

    @property
    def size_bytes(self) -> int:
        """Bytes of the served parameters and input scaling."""
        typed = self.typed.table.nbytes if self.typed is not None else 0
        return int(self.forward.size_bytes + self.x_mean.nbytes + self.x_inv_std.nbytes + typed)

    @property
    def sparsity(self) -> float:
        """Share of weight entries that are exactly zero."""
        return self.forward.sparsity

    @property
    def dim(self) -> int:
        """Width of a request row (typed: the encoded row)."""
        return self.typed.layout.dim if self.typed is not None else len(self.x_mean)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` for classification, values ``(n,)`` for regression."""
        X = np.asarray(X, np.float32)
        if self.typed is not None:
            X = self.typed.encode(X, self.x_mean)
        Z = X - self.x_mean
        Z *= self.x_inv_std
        z = self.forward(Z)
        if self.task == "binary" and len(z) == 1:  # one row: the same float32 arithmetic on
            p = (_ONE + np.tanh(z[0, 0] * _HALF)) * _HALF  # numpy scalars, a third of the time
            return np.array([[_ONE - p, p]], z.dtype)
        if self.task == "binary":  # the logistic, without overflow, written into its columns:
            out = np.empty((len(z), 2), z.dtype)  # what 0.5 * (1 + tanh(z / 2)) gives, bit
            p = out[:, 1]  # for bit, in a third of the numpy calls at batch 1
            np.multiply(z[:, 0], 0.5, out=p)
            np.tanh(p, out=p)
            p += 1.0
            p *= 0.5
            np.subtract(1.0, p, out=out[:, 0])
            return out
        if self.task == "multiclass":
            z = z - z.max(axis=1, keepdims=True)
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
            **({"schema": self.typed.layout.describe()} if self.typed is not None else {}),
            "form": self.form,
            "n_parameters": self.n_parameters,
            "size_bytes": self.size_bytes,
            "sparsity": round(self.sparsity, 4),
            "latency_us": None if np.isnan(self.latency_us) else round(self.latency_us, 1),
            "trained_events": self.trained_events,
            "published_unix": self.published_unix,
            "rolled_back_from": self.rolled_back_from,
            "metrics": dict(self.metrics),
        }


class SnapshotRef:
    """Holds the served snapshot. Readers take ``current`` (one attribute read, atomic);
    publishers serialise on a lock so versions only ever increase.

    :meth:`rollback` serves an earlier kept snapshot again *under a new version number* (versions
    never go backwards, on a connection or anywhere) and pins it: publishing is refused until
    :meth:`unpin`, so the next scheduled publish does not undo the operator's decision.

    Version numbers may be bounded by :meth:`reserve`: numbers at or above the bound are not
    handed out (:class:`VersionsExhausted`) until it is raised. The daemon raises it with each
    checkpoint, which records where a restart starts numbering, so no number is ever given to
    two models, whatever the crash.
    """

    def __init__(self, keep: int = 5, first_version: int = 1, spacing_s: float = 0.0):
        self._current: Snapshot | None = None
        self._lock = threading.Lock()
        # Kept for rollback: the last ``keep`` versions served, and of those that fell out,
        # ``keep`` more, each published at least ``spacing_s`` after the one before it. At 50
        # publishes a second the last five span 0.1 s; the spaced ones reach keep x spacing_s.
        self._history: deque[Snapshot] = deque(maxlen=keep)
        self._spaced: deque[Snapshot] = deque(maxlen=keep)
        self._spacing_s = spacing_s
        self._next_version = first_version
        self._limit: int | None = None  # None: unbounded
        self._pinned = False
        self._listeners: list[Callable[[Snapshot], None]] = []

    @property
    def current(self) -> Snapshot | None:
        return self._current

    @property
    def next_version(self) -> int:
        return self._next_version

    @property
    def pinned(self) -> bool:
        return self._pinned

    @property
    def limit(self) -> int | None:
        return self._limit

    def continue_from(self, next_version: int) -> None:
        """After a restart, keep numbering where the checkpointed run stopped."""
        with self._lock:
            self._next_version = max(self._next_version, next_version)

    def reserve(self, limit: int) -> None:
        """Hand out version numbers below ``limit`` only (it never goes down)."""
        with self._lock:
            self._limit = limit if self._limit is None else max(self._limit, limit)

    def _check_reserved(self) -> None:
        if self._limit is not None and self._next_version >= self._limit:
            raise VersionsExhausted(
                f"version {self._next_version} is not reserved yet (reserved below "
                f"{self._limit}); the next checkpoint reserves more"
            )

    def restore(self, kept: Sequence[Snapshot], pinned: bool) -> None:
        """Keep ``kept`` (oldest first, from a checkpoint) for rollback again, without serving
        any of them; numbering continues above them."""
        with self._lock:
            for snap in sorted(kept, key=lambda s: s.version):
                self._keep(snap)
                self._next_version = max(self._next_version, snap.version + 1)
            self._pinned = pinned

    def serve_again(self, snap: Snapshot) -> Snapshot:
        """Serve a kept snapshot's model again under the next version number (after a
        restart: what was served before), keeping the rollback pin as it is."""
        with self._lock:
            self._check_reserved()
            again = replace(snap, version=self._next_version, published_unix=time.time())
            return self._serve(again)

    def publish(self, draft: Draft) -> Snapshot | None:
        """Freeze ``draft`` as the next version and serve it; None (nothing changes) while a
        rollback pins serving."""
        if not draft.weights.is_finite():
            raise ValueError("refusing to publish a model with non-finite weights")
        problem = draft.weights.shape_problem(draft.n_outputs)
        if problem is not None:
            raise ValueError(f"refusing to publish a malformed model: {problem}")
        with self._lock:
            if self._pinned:
                return None
            self._check_reserved()
            return self._serve(Snapshot.from_draft(draft, self._next_version))

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` with every snapshot served from now on (and the current one), in
        version order, under the publish lock. Used to mirror serving into other processes."""
        with self._lock:
            self._listeners.append(listener)
            if self._current is not None:
                listener(self._current)

    def adopt(self, snap: Snapshot) -> bool:
        """Serve a snapshot versioned elsewhere (a mirror of another process's reference) if it
        is newer than the current one; older or equal versions are ignored."""
        with self._lock:
            if self._current is not None and snap.version <= self._current.version:
                return False
            self._serve(snap)
            return True

    def _serve(self, snap: Snapshot) -> Snapshot:
        # Mirrors first: once ``current`` names a version, every serving process can serve it.
        for listener in self._listeners:
            listener(snap)
        self._next_version = snap.version + 1
        self._keep(snap)
        self._current = snap
        return snap

    def _keep(self, snap: Snapshot) -> None:
        recent = self._history
        if self._spacing_s > 0 and len(recent) == recent.maxlen:
            leaving = recent[0]
            if (
                not self._spaced
                or leaving.published_unix - self._spaced[-1].published_unix >= self._spacing_s
            ):
                self._spaced.append(leaving)
        recent.append(snap)

    def rollback(self, version: int) -> Snapshot:
        """Serve kept ``version`` again as a new version, and pin serving to it."""
        with self._lock:
            kept = {s.version: s for s in (*self._spaced, *self._history)}
            old = kept.get(version)
            if old is None:
                raise LookupError(
                    f"version {version} is not kept; kept versions: {sorted(kept) or 'none'}"
                )
            if old.rolled_back_from is not None:
                version = old.rolled_back_from
            self._check_reserved()
            snap = replace(
                old,
                version=self._next_version,
                published_unix=time.time(),
                rolled_back_from=version,
            )
            self._pinned = True
            return self._serve(snap)

    def unpin(self) -> bool:
        """Let publishing resume after a rollback; returns whether serving was pinned."""
        with self._lock:
            was, self._pinned = self._pinned, False
            return was

    def history(self) -> tuple[Snapshot, ...]:
        """The kept versions, oldest first."""
        return (*self._spaced, *self._history)
