"""Input drift: a shift in a feature's distribution, reported apart from concept drift.

Concept drift (:mod:`learnd.daemon.drift.concept`) watches the model's error; a feature can move without the
error rising (the model may extrapolate well, or not yet), and operators want to know either
way. One river detector per feature watches that feature's *mean over each micro-batch*: one
update per feature per batch, so the cost does not grow with the event rate, and batch means
are close to normal, which suits ADWIN. Both directions count. The first ``max_features``
features are watched (the metric's label set stays bounded). Category features are watched
by the shares of their most frequent values (:mod:`learnd.daemon.drift.categories`), after the
numbers.

Like the concept-drift monitor, the detectors are restored by replay: the last ``replay`` batch
means are kept (for each feature only those since its last alarm) and fed to fresh detectors
when a checkpoint is loaded.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> mon = InputDriftMonitor(("a", "b"))
>>> for i in range(400):  # feature "b" jumps by two standard deviations at batch 200
...     X = rng.normal(size=(32, 2)) + [0.0, 2.0 * (i >= 200)]
...     _ = mon.update(X, start=32 * i)
>>> mon.alarms["a"], mon.alarms["b"] >= 1, 6400 <= mon.last_alarm_at["b"] < 6400 + 32 * 40
(0, True, True)
"""

from __future__ import annotations

import logging

import numpy as np
from river import drift

from learnd.daemon.drift.categories import CategoryShares
from learnd.daemon.drift.concept import make_detector
from learnd.daemon.learning.replay_ring import ReplayRing

log = logging.getLogger("learnd.drift")


class InputDriftMonitor:
    def __init__(
        self,
        features: tuple[str, ...],
        detector: str = "adwin",
        max_features: int = 64,
        replay: int = 2000,
        categories: tuple[tuple[str, int], ...] = (),
    ):
        # Numeric columns first, then each category feature's shares (CategoryShares), all
        # watched alike: ``features`` names every series watched.
        self.n_numeric = min(len(features), max_features)
        self.shares = CategoryShares(categories)
        self.features = (tuple(features) + self.shares.names)[:max_features]
        self.enabled = detector != "none" and bool(self.features)
        self.name = detector
        self._dets = [self._make(detector) for _ in self.features] if self.enabled else []
        self.alarms = {f: 0 for f in self.features}
        self.last_alarm_at = {f: -1 for f in self.features}
        # The last `replay` batch means (a ring of rows), and per feature how many of the
        # newest rows came after its last alarm (what a restore replays).
        self.replay = replay
        self._ring = ReplayRing(replay, len(self.features))
        self._since = np.zeros(len(self.features), np.int64)

    @staticmethod
    def _make(name: str):
        # ADWIN checks for a change every `clock` updates (32 by default, meant for per-event
        # streams); with one update per batch, check at every one.
        return drift.ADWIN(clock=1) if name == "adwin" else make_detector(name)

    def update(self, X: np.ndarray, start: int) -> list[tuple[str, int]]:
        """Feed one micro-batch (rows of raw features, first event at index ``start``); returns
        the features that drifted, with the event index of the batch's end."""
        if not self.enabled or len(X) == 0:
            return []
        k = self.n_numeric
        means = np.asarray(X, np.float64)[:, :k].mean(axis=0)
        if np.isnan(means).any():  # typed features: a missing number is NaN, left out
            with np.errstate(invalid="ignore"):
                cols = np.asarray(X, np.float64)[:, :k]
                present = ~np.isnan(cols)
                means = np.where(present, cols, 0.0).sum(0) / present.sum(0)
        if self.shares.columns:
            means = np.concatenate([means, self.shares.shares(X)])[: len(self.features)]
        at = start + len(X) - 1
        out = []
        self._ring.extend(means[None, :])
        np.minimum(self._since + 1, self.replay, out=self._since)
        for i, (name, det, m) in enumerate(zip(self.features, self._dets, means, strict=True)):
            if m != m:  # every value of the feature missing in this batch: nothing to watch
                continue
            det.update(float(m))
            if det.drift_detected:
                self._since[i] = 0  # what came before belongs to the old distribution
                self.alarms[name] += 1
                self.last_alarm_at[name] = at
                out.append((name, at))
                log.warning(
                    "input drift in feature %s",
                    name,
                    extra={"event": "input_drift", "feature": name, "at_event": at},
                )
        return out

    def estimates(self) -> dict[str, float]:
        """Each detector's current estimate of its feature's batch mean (ADWIN; NaN otherwise)."""
        out = {}
        for name, det in zip(self.features, self._dets, strict=True):
            est = getattr(det, "estimation", None)
            out[name] = float(est) if est is not None else float("nan")
        return out

    def _recent(self, i: int) -> np.ndarray:
        """Feature ``i``'s remembered batch means since its last alarm, oldest first."""
        return self._ring.last(int(self._since[i]))[:, i]

    def state_dict(self) -> dict:
        return {
            "features": list(self.features),
            "recent": [self._recent(i) for i in range(len(self.features))],
            "alarms": dict(self.alarms),
            "last_alarm_at": dict(self.last_alarm_at),
            "shares": self.shares.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore counts and detectors; a checkpoint for other features restores nothing."""
        if list(state["features"]) != list(self.features):
            return
        self.alarms = {f: int(state["alarms"][f]) for f in self.features}
        self.last_alarm_at = {f: int(state["last_alarm_at"][f]) for f in self.features}
        if "shares" in state:
            self.shares.load_state_dict(state["shares"])
        self._ring.clear()
        self._since[:] = 0
        if not self.enabled:
            return
        recent = [np.asarray(r, np.float64)[-self.replay :] for r in state["recent"]]
        rows = np.zeros((max((len(r) for r in recent), default=0), len(recent)))
        for i, r in enumerate(recent):  # newest rows aligned at the end
            rows[len(rows) - len(r) :, i] = r
        self._ring.extend(rows)
        self._since[:] = [len(r) for r in recent]
        self._dets = [self._make(self.name) for _ in self.features]
        for det, r in zip(self._dets, recent, strict=True):
            for m in r.tolist():
                if m == m:  # NaN: a batch where the feature was missing throughout
                    det.update(m)
