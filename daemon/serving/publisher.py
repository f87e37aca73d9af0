"""From learned to served: freeze candidates, have the gate judge them, publish those that pass.

Every learned batch is also predicted by the served version (:meth:`Publisher.observe`): that
gives the served version's own prequential score and the gate's evidence. A candidate is frozen
every ``learning.publish_every_s`` and judged on the next batch (:mod:`learnd.daemon.serving.gate`),
or, when the stream has stopped, on the evidence there is. Version numbers are reserved by
checkpoints (:data:`VERSION_BLOCK`), and the served and kept versions travel in them, so a
restart serves what was served before and never gives a number to a second model.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from learnd.daemon.config import LearndConfig
from learnd.daemon.failpoints import NONE, Failpoints
from learnd.daemon.learning.prequential import RollingMetrics
from learnd.daemon.ports import Clock
from learnd.daemon.serving.budget import PublishBudget
from learnd.daemon.serving.compress import measured, reuse_form, select_form
from learnd.daemon.serving.gate import Gate, Verdict
from learnd.daemon.serving.histogram import Histogram
from learnd.daemon.serving.snapshot import Draft, Snapshot, SnapshotRef, VersionsExhausted
from learnd.daemon.serving.snapshot_state import (
    BadSnapshotState,
    snapshot_from_state,
    snapshot_state,
)
from learnd.daemon.serving.weights import DenseWeights

log = logging.getLogger("learnd.pipeline")

# Version numbers each checkpoint reserves: a restart numbers from above them, so a number is
# never given to two models, whatever the crash. At 50 publishes a second they last 200 s; the
# checkpoint interval is 30 s by default (one is asked for early when they run out).
VERSION_BLOCK = 10_000
# Compressed forms are measured and chosen again at most this often (seconds); in between, each
# candidate is served in the form chosen last, checked against its plain copy on the gate's
# events. Measuring every form costs milliseconds, which publishing every few batches cannot.
FORMS_EVERY_S = 10.0


class Publisher:
    """Freezes candidates, has the gate judge them, publishes what passes, and keeps the
    counters and the state that serving's promises need across restarts."""

    def __init__(
        self,
        cfg: LearndConfig,
        ref: SnapshotRef,
        clock: Clock,
        failpoints: Failpoints = NONE,
    ):
        self.cfg = cfg
        self.ref = ref
        self.clock = clock
        self.failpoints = failpoints
        schema = cfg.schema_
        gate = cfg.learning.gate
        self.gate = (
            Gate(schema.task, schema.dim, gate.window, gate.tolerance) if gate.enabled else None
        )
        # The served version's own prequential score: its predictions of each batch, made
        # before the learner trains on it (beside the learner's own).
        self.served_metrics = RollingMetrics(schema.task, cfg.learning.metrics_window)
        # Behind the log (set by the pipeline from the consumer lag), the publish path gets a
        # share of the learning thread's time only.
        self.behind = False
        self.budget = PublishBudget(cfg.learning.publish_budget)
        self.published = 0
        self.publish_failures = 0
        self.publish_pinned = 0
        self.publish_waits = 0  # publishes deferred until a checkpoint reserves versions
        self.gate_rejected = 0
        self.last_verdict: Verdict | None = None
        self.latency = Histogram()  # seconds from frozen to served
        # (form, outcome) -> count; outcome: served | plain | passed | worse | nonfinite |
        # slower | unavailable | skipped_drift
        self.compression: Counter[tuple[str, str]] = Counter()
        self.last_forms: list[dict[str, Any]] = []
        self.wants_checkpoint = False
        self.last_alarm_at = -(10**18)
        self._last_freeze = float("-inf")
        self._learned_at_freeze = -1
        self._restored: Snapshot | None = None
        self._form: str | None = None  # the compressed form chosen last
        self._forms_at = float("-inf")
        self._form_latency_us = float("nan")
        self._plain_latency_us = float("nan")
        self._plain_latency_at = float("-inf")
        self._rejected_streak = 0

    def bound_versions(self) -> None:
        """From now on hand out only reserved version numbers (checkpoints reserve them): until
        the first reservation, only the first version, the untrained model, the same on every
        fresh start. Without checkpoints (no :class:`~learnd.daemon.service.Service`) numbers
        are not bounded: nothing survives a restart to collide with."""
        self.ref.reserve(self.ref.next_version + 1)

    def observe(self, X: np.ndarray, y: np.ndarray, learner_out: np.ndarray) -> None:
        """A batch was learned: score the served version on it, and judge a waiting
        candidate (behind the log, when the budget affords it)."""
        started = self.clock()
        if not self.budget.affords(started, self.behind):
            self.budget.skipped += 1
            return
        self._observe(X, y, learner_out)
        self.budget.spend(self.clock() - started)

    def _observe(self, X: np.ndarray, y: np.ndarray, learner_out: np.ndarray) -> None:
        served = self.ref.current
        served_out = served.predict_many(X) if served is not None else None
        if served_out is not None:
            self.served_metrics.update(served_out, y)
        if self.gate is not None:
            held = self.gate.observe(X, y, learner_out, served, served_out)
            if held is not None:
                self._decide(*held)

    def on_drift(self, at: int) -> None:
        self.last_alarm_at = at
        if self.gate is not None:
            self.gate.on_drift()

    def tick(
        self,
        now: float,
        learned: int,
        batch_pending: bool,
        export: Callable[[], DenseWeights],
        summary: Callable[[], Mapping[str, float]],
    ) -> None:
        """Judge a candidate no next batch will judge (the stream stopped: nothing pending for
        ``learning.batch_max_age_s``); freeze a candidate when due."""
        gate, lrn = self.gate, self.cfg.learning
        if (
            gate is not None
            and gate.waiting
            and not batch_pending
            and now - gate.frozen_at >= lrn.batch_max_age_s
        ):
            held = gate.judge_idle(self.ref.current)
            if held is not None:
                self._decide(*held)
        every = lrn.publish_every_events
        due = now - self._last_freeze >= lrn.publish_every_s or (
            every is not None and learned - self._learned_at_freeze >= every
        )
        if due and self.budget.affords(now, self.behind):
            self.freeze(learned, export, summary)
            self.budget.spend(self.clock() - now)

    def freeze(
        self,
        learned: int,
        export: Callable[[], DenseWeights],
        summary: Callable[[], Mapping[str, float]],
    ) -> None:
        """Freeze a copy of the current model as the candidate: published at once while nothing
        is served (or without the gate), else judged on the next batch."""
        now = self.clock()
        self._last_freeze = now
        if learned == self._learned_at_freeze and self.ref.current is not None:
            return
        if self.ref.pinned:  # an operator rolled back: serving stays put until unpinned
            self.publish_pinned += 1
            self._learned_at_freeze = learned
            return
        if self.gate is not None and self.gate.waiting:
            return  # one candidate at a time: the next batch judges it
        weights = export()
        if not weights.is_finite():
            self.publish_failures += 1
            log.error("model has non-finite weights; not published", extra={"event": "publish"})
            return
        schema = self.cfg.schema_
        draft = Draft(
            schema.task, schema.class_values, schema.feature_names, weights, learned, summary()
        )
        self._learned_at_freeze = learned
        if self.gate is None or self.ref.current is None:
            self._publish(draft, now)
        else:
            self.gate.offer(draft, now)

    def _decide(self, draft: Draft, verdict: Verdict) -> None:
        """Publish a judged candidate, or count and log its rejection."""
        assert self.gate is not None
        self.last_verdict = verdict
        if verdict.publish:
            self._rejected_streak = 0
            self._publish(self._compressed(draft), self.gate.frozen_at)
            return
        self.gate_rejected += 1
        self._rejected_streak += 1
        # Candidates come every few batches: the first rejection of a streak is a warning,
        # the rest are counted (learnd_publishes_total) and logged every 100th.
        if self._rejected_streak == 1 or self._rejected_streak % 100 == 0:
            log.warning(
                "candidate rejected by the gate",
                extra={
                    "event": "gate_rejected",
                    "reason": verdict.reason,
                    "candidate_score": verdict.candidate_score,
                    "served_score": verdict.served_score,
                    "evidence": self.gate.evidence,
                    "in_a_row": self._rejected_streak,
                },
            )

    def _compressed(self, draft: Draft) -> Draft:
        """The form of ``draft`` to serve: the plain copy when compression is off or right
        after a drift alarm; else every form measured and the fastest that scores within the
        tolerance of the plain copy chosen (at most every :data:`FORMS_EVERY_S`), or the form
        chosen last, checked on the gate's recent events."""
        c = self.cfg.compression
        if not c.enabled or not c.forms or self.gate is None:
            return draft
        if draft.trained_events - self.last_alarm_at < c.after_drift_events:
            self.compression[("all", "skipped_drift")] += 1
            return draft
        X, y = self.gate.recent()
        if len(y) == 0:
            return draft
        now = self.clock()
        full = self._form is None or now - self._forms_at >= FORMS_EVERY_S
        if full:
            self._forms_at = now
            chosen, table = select_form(draft, X, y, c)
        else:
            assert self._form is not None
            chosen, table = reuse_form(draft, self._form, X, y, c, self._form_latency_us)
        for row in table:
            self.compression[(row["name"], row["outcome"])] += 1
        self.last_forms = table
        served = next(r["name"] for r in table if r.get("outcome") == "served")
        if full or served != self._form:
            log.info(
                "compression: serving %s",
                chosen.forward.form if chosen.forward is not None else "numpy-fp32",
                extra={"event": "compression", "forms": table},
            )
        if full:
            self._form, self._form_latency_us = served, chosen.latency_us
        return chosen

    def _with_latency(self, draft: Draft) -> Draft:
        """``draft`` with a batch-1 latency for ``info``: a chosen form carries its own; the
        plain copy's is measured at most every :data:`FORMS_EVERY_S` (same architecture, same
        cost) rather than at every publish."""
        if not np.isnan(draft.latency_us):
            return draft
        now = self.clock()
        if np.isnan(self._plain_latency_us) or now - self._plain_latency_at >= FORMS_EVERY_S:
            draft = measured(draft)
            self._plain_latency_us, self._plain_latency_at = draft.latency_us, now
            return draft
        return replace(draft, latency_us=self._plain_latency_us)

    def _publish(self, draft: Draft, frozen_at: float) -> None:
        draft = self._with_latency(draft)
        try:
            snap = self.ref.publish(draft)
        except VersionsExhausted:
            self.publish_waits += 1
            self.wants_checkpoint = True
            self._learned_at_freeze = -1  # publish again once versions are reserved
            return
        if snap is None:  # pinned by a rollback meanwhile
            self.publish_pinned += 1
            return
        self.published += 1
        self.latency.observe(max(0.0, self.clock() - frozen_at))
        if self.gate is not None:
            self.gate.published(snap)
        self.failpoints.hit("after_publish")
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "published",
                extra={
                    "event": "publish",
                    "version": snap.version,
                    "trained_events": snap.trained_events,
                    "digest": snap_digest(snap),
                },
            )

    def reserve_versions(self, next_version: int) -> None:
        """A checkpoint saying a restart numbers from ``next_version`` is durable: numbers
        below it may be used."""
        self.ref.reserve(next_version)
        self.wants_checkpoint = False

    def serve_restored(self, reserved: bool, learned: int) -> bool:
        """Serve after start-up: the version served when the checkpoint was written, again (as
        a new version when numbers are reserved, else under its own), or for a new model its
        untrained first version. A new candidate needs new events and must pass the gate."""
        snap = self._restored
        if snap is None:
            return False
        self._restored = None
        if reserved:
            served = self.ref.serve_again(snap)
        else:  # no number of its own to give it: the number it had
            self.ref.adopt(snap)
            served = snap
        if self.gate is not None:
            self.gate.set_anchor(served)
        self._learned_at_freeze = learned
        log.info(
            "serving the model served before the restart",
            extra={
                "event": "serve_restored",
                "version": served.version,
                "served_before_as": snap.version,
                "trained_events": snap.trained_events,
                "digest": snap_digest(snap),
            },
        )
        return True

    def state_dict(self) -> dict[str, Any]:
        current = self.ref.current
        return {
            "served": current.version if current is not None else None,
            "pinned": self.ref.pinned,
            "kept": [snapshot_state(s) for s in self.ref.history()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        kept = []
        for s in state.get("kept", []):
            try:
                kept.append(snapshot_from_state(s))
            except BadSnapshotState as e:
                log.error(
                    "a kept version in the checkpoint cannot be served; dropped: %s",
                    e,
                    extra={"event": "checkpoint_corrupt"},
                )
        self.ref.restore(kept, bool(state.get("pinned", False)))
        served = state.get("served")
        self._restored = next((s for s in kept if s.version == served), None)

    def continue_from(self, next_version: int, skipped_newer: int) -> None:
        """Number from where the checkpoint says, plus a block for each newer checkpoint that
        could not be read (each may have reserved one)."""
        self.ref.continue_from(next_version + skipped_newer * VERSION_BLOCK)

    @property
    def restart_version(self) -> int:
        """Where a restart numbers from: above every number this run may use before the next
        checkpoint."""
        return self.ref.next_version + VERSION_BLOCK


def snap_digest(snap: Snapshot) -> str:
    """A short fingerprint of a snapshot's model: which weights a version number names."""
    state = snapshot_state(snap)
    crc = 0
    for a in (*state["weights"], *state["biases"], state["x_mean"], state["x_inv_std"]):
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return f"{crc:08x}"
