"""Input drift: a shift in a feature's distribution, reported apart from concept drift.

Concept drift (:mod:`daemon.drift`) watches the model's error; a feature can move without the
error rising (the model may extrapolate well, or not yet), and operators want to know either
way. One river detector per feature watches that feature's *mean over each micro-batch*: one
update per feature per batch, so the cost does not grow with the event rate, and batch means
are close to normal, which suits ADWIN. Both directions count. The first ``max_features``
features are watched (the metric's label set stays bounded).

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

from daemon.drift import make_detector

log = logging.getLogger("learnd.drift")


class InputDriftMonitor:
    def __init__(self, features: tuple[str, ...], detector: str = "adwin", max_features: int = 64):
        self.features = tuple(features)[:max_features]
        self.enabled = detector != "none" and bool(self.features)
        self.name = detector
        self._dets = [self._make(detector) for _ in self.features] if self.enabled else []
        self.alarms = {f: 0 for f in self.features}
        self.last_alarm_at = {f: -1 for f in self.features}

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
        means = np.asarray(X, np.float64)[:, : len(self.features)].mean(axis=0)
        at = start + len(X) - 1
        out = []
        for name, det, m in zip(self.features, self._dets, means, strict=True):
            det.update(float(m))
            if det.drift_detected:
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
