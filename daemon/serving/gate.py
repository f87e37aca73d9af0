"""The publish gate: a candidate reaches serving only after it proves itself on events it has
not trained on, and the evidence is already there when it is frozen (see :class:`Gate`).

Every comparison is paired: the candidate (or the learner) and the served model (or the anchor)
are scored on exactly the same events, so label noise and drift lower both alike and do not
change which is better. A candidate is refused when it is finite-ly but *significantly* more
than ``tolerance`` worse: the per-event difference (correct/incorrect for classification,
absolute error for regression, where the tolerance is a fraction of the served MAE) must not
exceed the tolerance by more than ``Z`` standard errors. Without that allowance two equally
good models would be told apart by sampling noise alone.

Examples
--------
>>> import numpy as np
>>> y = np.array([1, 1, 0, 1])
>>> right = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
>>> judge("binary", right[:, ::-1], right, y, tolerance=0.005).reason  # every answer flipped
'worse'
>>> judge("binary", right, right, y, tolerance=0.005).publish
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learnd.daemon.serving.snapshot import Draft, Snapshot

Z = 2.0  # one-sided ~97.7%: reject only when the candidate is clearly worse
# The newest 1/RECENT_SHARE of the window is checked on its own too: a learner that has just
# dipped hides in the average of a whole window.
RECENT_SHARE = 4


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


def paired_ok(task: str, loss_c: np.ndarray, loss_s: np.ndarray, tolerance: float) -> bool:
    """Whether per-event losses ``loss_c`` are not significantly more than ``tolerance`` worse
    than ``loss_s`` on the same events (the rule of :func:`judge`)."""
    if len(loss_c) == 0:
        return True
    allowed = tolerance * float(loss_s.mean()) if task == "regression" else tolerance
    diff = loss_c - loss_s
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return float(diff.mean()) <= allowed + Z * se


def paired_better(loss_c: np.ndarray, loss_s: np.ndarray) -> bool:
    """Whether ``loss_c`` is significantly (``Z`` standard errors) below ``loss_s``."""
    if len(loss_c) < 2:
        return False
    diff = loss_c - loss_s
    return float(diff.mean()) + Z * float(diff.std(ddof=1) / np.sqrt(len(diff))) < 0


def losses(task: str, outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-event loss: 0/1 misclassification, or absolute error."""
    if task == "regression":
        return np.abs(np.asarray(outputs, np.float64) - np.asarray(y, np.float64))
    return (outputs.argmax(axis=1) != np.asarray(y, np.int64)).astype(np.float64)


class _Rows:
    """The newest ``size`` rows of paired evidence, oldest first on read."""

    def __init__(self, size: int, width: int):
        self.X = np.zeros((size, width), np.float32)
        self.y = np.zeros(size, np.float64)
        self.learner = np.zeros(size, np.float64)  # the learner's loss before it trained
        self.anchor = np.zeros(size, np.float64)  # the anchor's loss on the same event
        self.served = np.zeros(size, np.float64)  # the served version's loss on it
        self.pos = 0
        self.n = 0

    def add(
        self,
        X: np.ndarray,
        y: np.ndarray,
        learner: np.ndarray,
        anchor: np.ndarray,
        served: np.ndarray,
    ) -> None:
        size = len(self.y)
        k = min(len(y), size)
        idx = (self.pos + np.arange(k)) % size
        self.X[idx], self.y[idx] = X[-k:], y[-k:]
        self.learner[idx], self.anchor[idx], self.served[idx] = (
            learner[-k:],
            anchor[-k:],
            served[-k:],
        )
        self.pos = (self.pos + k) % size
        self.n = min(size, self.n + k)

    def order(self) -> np.ndarray:
        size = len(self.y)
        return (self.pos - self.n + np.arange(self.n)) % size

    def clear(self) -> None:
        self.pos = self.n = 0


class Gate:
    """Judges candidates on evidence that is already there when they are frozen.

    Learning is test-then-train: every micro-batch is predicted by the learner before it trains
    on it, and :meth:`observe` also gets the served version's predictions of the same events
    (one forward pass, which also gives the served version's own prequential score). Two paired
    comparisons, both on events the model judged had not trained on, decide a candidate:

    1. *its own predictions*: a candidate frozen after one batch is judged on the next batch,
       which it has not trained on, against the served version on the same events
       (:func:`judge`: not more than ``tolerance`` worse beyond ``Z`` standard errors);
    2. *the learner that produced it*: over the last ``window`` events, the learner's
       predictions before it trained on each, against an *anchor* on the same events, by the
       same rule. The anchor is the version served when the evidence began; it moves to the
       newly published version once the learner has done at least as well as it over a whole
       ``window``, so that a slow decline cannot pass in steps each within the tolerance of
       the version just before. The newest quarter of the window must hold on its own too,
       or a learner that has just dipped would hide in the whole window's average. A learner significantly better than the served version over
       the window passes too (it recovers what a bad stretch cost).

    After a drift alarm, for ``window`` events, check 2 asks more: over the events since the
    alarm, the learner must be significantly *better* than the served version. A real change
    of concept makes the served version wrong and the learner, which adapts, soon much better;
    poisoned labels make both wrong alike, and the learner, its learning rate boosted by the
    alarm, only worse. Measured with ``bench/soak.py poison`` (docs/design.md).

    When the stream stops, the last candidate has no next batch: it is judged on the evidence
    there is (:meth:`judge_idle`): check 2 (passed vacuously when the anchor has just moved and
    no event has come since), and check 1 on the newest batch it learned, in-sample, where a
    step that broke the model still shows. With no batch learned since start-up (a restart
    before any new event), nothing is published: the version served before goes on serving.
    """

    def __init__(self, task: str, dim: int, window: int, tolerance: float):
        self.task = task
        self.window = window
        self.tolerance = tolerance
        self._rows = _Rows(window, dim)
        self.anchor: Snapshot | None = None
        self.candidate: Draft | None = None
        self.frozen_at = 0.0
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the newest batch learned
        self._since_alarm: int | None = None  # events since a drift alarm, for a window

    @property
    def waiting(self) -> bool:
        return self.candidate is not None

    @property
    def evidence(self) -> int:
        """Events of paired evidence against the anchor."""
        return self._rows.n

    def offer(self, candidate: Draft, at: float) -> None:
        self.candidate, self.frozen_at = candidate, at

    def clear(self) -> None:
        self.candidate = None

    def on_drift(self) -> None:
        """A drift alarm: for the next ``window`` events, the learner must do better than the
        served version, not merely as well (see the class docstring)."""
        self._since_alarm = 0

    def set_anchor(self, snap: Snapshot | None) -> None:
        """Judge the learner against ``snap`` from now on (evidence starts again)."""
        self.anchor = snap
        self._rows.clear()

    def published(self, snap: Snapshot) -> None:
        """``snap`` now serves. It becomes the anchor when there is none, or once the current
        anchor has been judged over a whole window in which the learner did at least as well
        as it: while the learner is worse (poisoned labels), the anchor stays, and the decline
        adds up against it until it is significant."""
        rows = self._rows
        if self.anchor is None or (
            rows.n >= self.window and rows.learner[: rows.n].mean() <= rows.anchor[: rows.n].mean()
        ):
            self.set_anchor(snap)

    def recent(self) -> tuple[np.ndarray, np.ndarray]:
        """The events of the evidence (oldest first): for checking compressed forms."""
        order = self._rows.order()
        return self._rows.X[order], self._rows.y[order]

    def observe(
        self,
        X: np.ndarray,
        y: np.ndarray,
        learner_out: np.ndarray,
        served: Snapshot | None,
        served_out: np.ndarray | None,
    ) -> tuple[Draft, Verdict] | None:
        """Add one learned batch's evidence; judge the waiting candidate on it. Returns the
        candidate and its verdict when one was judged."""
        ok = np.isfinite(y) & np.isfinite(X).all(axis=1)
        if not ok.all():
            X, y, learner_out = X[ok], y[ok], learner_out[ok]
            served_out = served_out[ok] if served_out is not None else None
        if len(y) == 0:
            return None
        if self.anchor is None and served is not None:
            self.set_anchor(served)
        if self.anchor is not None:
            anchor_out = (
                served_out
                if self.anchor is served and served_out is not None
                else self.anchor.predict_many(X)
            )
            anchor_loss = losses(self.task, anchor_out, y)
            served_loss = anchor_loss if served_out is None else losses(self.task, served_out, y)
            self._rows.add(X, y, losses(self.task, learner_out, y), anchor_loss, served_loss)
            if self._since_alarm is not None:
                self._since_alarm += len(y)
                if self._since_alarm >= self.window:
                    self._since_alarm = None
        self._last = (np.array(X, copy=True), np.array(y, copy=True))
        if self.candidate is None:
            return None
        return self._judge(X, y, served, served_out)

    def judge_idle(self, served: Snapshot | None) -> tuple[Draft, Verdict] | None:
        """Judge the waiting candidate without a next batch (the stream stopped)."""
        if self.candidate is None:
            return None
        if self._last is None:
            draft = self.candidate
            self.candidate = None
            return draft, Verdict(False, "no_evidence", float("nan"), float("nan"))
        X, y = self._last
        return self._judge(X, y, served, served.predict_many(X) if served is not None else None)

    def _judge(
        self, X: np.ndarray, y: np.ndarray, served: Snapshot | None, served_out: np.ndarray | None
    ) -> tuple[Draft, Verdict]:
        draft = self.candidate
        assert draft is not None
        self.candidate = None
        out = Snapshot.from_draft(draft, version=-1).predict_many(X)
        verdict = judge(self.task, out, served_out, y, self.tolerance)
        if verdict.publish and not self._learner_keeps_up():
            verdict = Verdict(
                False, "worse_than_anchor", verdict.candidate_score, verdict.served_score
            )
        return draft, verdict

    def _learner_keeps_up(self) -> bool:
        rows = self._rows
        order = rows.order()
        learner, served = rows.learner[order], rows.served[order]
        if self._since_alarm is not None:
            k = self._since_alarm
            return paired_better(learner[-k:], served[-k:]) if k else False
        anchor = rows.anchor[order]
        recent = -max(1, len(order) // RECENT_SHARE)
        holds = paired_ok(self.task, learner, anchor, self.tolerance) and paired_ok(
            self.task, learner[recent:], anchor[recent:], self.tolerance
        )
        return holds or paired_better(learner, served)
