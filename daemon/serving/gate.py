"""The publish gate: a candidate reaches serving only after it proves itself on fresh data.

When a publish is due, the learner's current weights are frozen as the *candidate* and learning
goes on. The next ``window`` labelled events, none of which the candidate has trained on, are
collected; then the candidate and the served model are scored on exactly those events. The
candidate is published if it is finite and not *significantly* more than ``tolerance`` worse
than the served model: the paired per-event difference (correct/incorrect for classification,
absolute error for regression, where the tolerance is a fraction of the served MAE) must not
exceed the tolerance by more than ``Z`` standard errors. Without that allowance, two equally
good models 500 events apart differ by ~0.8 points from sampling alone and a good candidate
would be refused one time in four.

Both models see the same events, so the comparison is paired; random label noise lowers both
scores alike and does not change which is better.

Examples
--------
>>> import numpy as np

>>> gate = Gate(window=4, tolerance=0.0)
>>> gate.offer("candidate")
>>> gate.waiting
True
>>> X, y = np.zeros((4, 1)), np.array([1, 1, 0, 1])
>>> gate.observe(X[:3], y[:3]) is None
True
>>> X_h, y_h = gate.observe(X[3:], y[3:])
>>> len(y_h)
4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Z = 2.0  # one-sided ~97.7%: reject only when the candidate is clearly worse


@dataclass(frozen=True, slots=True)
class Verdict:
    publish: bool
    reason: str  # "passed" | "worse" | "nonfinite"
    candidate_score: float
    served_score: float


def score(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy for classification; negative mean absolute error for regression (higher is
    better in both)."""
    if task == "regression":
        return -float(np.mean(np.abs(np.asarray(outputs, np.float64) - y)))
    return float(np.mean(outputs.argmax(axis=1) == np.asarray(y, np.int64)))


def judge(
    task: str,
    candidate_out: np.ndarray,
    served_out: np.ndarray | None,
    y: np.ndarray,
    tolerance: float,
) -> Verdict:
    if not np.isfinite(candidate_out).all():
        return Verdict(False, "nonfinite", float("nan"), float("nan"))
    c = score(task, candidate_out, y)
    if served_out is None:
        return Verdict(True, "passed", c, float("nan"))
    s = score(task, served_out, y)
    if task == "regression":
        loss_c = np.abs(np.asarray(candidate_out, np.float64) - y)
        loss_s = np.abs(np.asarray(served_out, np.float64) - y)
        allowed = tolerance * float(loss_s.mean())
    else:
        loss_c = (candidate_out.argmax(axis=1) != np.asarray(y, np.int64)).astype(np.float64)
        loss_s = (served_out.argmax(axis=1) != np.asarray(y, np.int64)).astype(np.float64)
        allowed = tolerance
    diff = loss_c - loss_s  # > 0 where the candidate does worse
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    ok = float(diff.mean()) <= allowed + Z * se
    return Verdict(ok, "passed" if ok else "worse", c, s)


def within(
    task: str, form_out: np.ndarray, plain_out: np.ndarray, y: np.ndarray, tolerance: float
) -> Verdict:
    """Is a compressed form as good as the plain copy it was made from, on the same events?

    Unlike :func:`judge` there is no sampling allowance: both are the same model, so any loss
    beyond ``tolerance`` is the compression's doing.
    """
    if not np.isfinite(form_out).all():
        return Verdict(False, "nonfinite", float("nan"), float("nan"))
    c, p = score(task, form_out, y), score(task, plain_out, y)
    allowed = tolerance * abs(p) if task == "regression" else tolerance
    ok = p - c <= allowed + 1e-12
    return Verdict(ok, "passed" if ok else "worse", c, p)


class Gate:
    """Holds at most one candidate and the fresh events collected since it was frozen."""

    def __init__(self, window: int, tolerance: float):
        self.window = window
        self.tolerance = tolerance
        self.candidate: Any = None
        self._X: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._n = 0

    @property
    def waiting(self) -> bool:
        return self.candidate is not None

    def offer(self, candidate: Any) -> None:
        self.candidate = candidate
        self._X, self._y, self._n = [], [], 0

    def observe(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Add fresh events; once ``window`` have come, return them (and clear the buffer)."""
        if self.candidate is None:
            return None
        self._X.append(np.array(X, copy=True))
        self._y.append(np.array(y, copy=True))
        self._n += len(y)
        if self._n < self.window:
            return None
        X_h, y_h = np.concatenate(self._X), np.concatenate(self._y)
        self._X, self._y, self._n = [], [], 0
        return X_h, y_h

    def clear(self) -> None:
        self.candidate = None
        self._X, self._y, self._n = [], [], 0
