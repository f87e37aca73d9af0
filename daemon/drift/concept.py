"""Concept-drift monitoring of the prequential error stream with river's detectors.

river 0.26's ADWIN keeps its window in an opaque native object, so its state cannot be written
as plain tensors. The monitor keeps the most recent inputs (at most ``replay``) and restores a
detector by replaying them into a fresh one: the restored window has the same recent content,
though not necessarily the same bucket layout.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> errors = np.concatenate([rng.random(3000) < 0.1, rng.random(2000) < 0.5]).astype(float)
>>> mon = DriftMonitor("adwin")
>>> alarms = mon.update_many(errors, start=0)
>>> len(alarms) >= 1 and 3000 <= alarms[0] < 3300
True
"""

from __future__ import annotations

import numpy as np
from river import drift

from learnd.daemon.learning.replay_ring import ReplayRing


def make_detector(name: str, adwin_delta: float = 0.002):
    if name == "adwin":
        return drift.ADWIN(delta=adwin_delta)
    if name == "page_hinkley":
        return drift.PageHinkley()
    if name == "kswin":
        return drift.KSWIN(seed=0)
    raise ValueError(f"unknown drift detector {name!r}; valid: 'adwin', 'page_hinkley', 'kswin'")


class DriftMonitor:
    """Feeds per-event errors to a detector and records the event index of every alarm.

    river's detectors flag any change in the mean, including the error *falling* while a model
    learns. Only rises are concept drift: a change whose new estimate is below the old one is
    counted in ``improvements`` and raises no alarm (ADWIN; other detectors only detect rises
    or expose no estimate).
    """

    def __init__(self, detector: str = "adwin", replay: int = 20_000, adwin_delta: float = 0.002):
        self.name = detector
        self.replay = replay
        self.adwin_delta = adwin_delta  # river's default; larger is more sensitive
        self.enabled = detector != "none"
        self._det = make_detector(detector, adwin_delta) if self.enabled else None
        # The last `replay` inputs, in a ring (a concatenation per batch copied the whole
        # window each time: ~1 us per event at batch 32).
        self._ring = ReplayRing(replay)
        self._count = 0  # inputs that count (<= replay): those since the last alarm
        self.alarms = 0
        self.improvements = 0
        self.last_alarm_at = -1

    @property
    def estimation(self) -> float:
        """The detector's current estimate of the mean error (ADWIN), NaN otherwise."""
        est = getattr(self._det, "estimation", None)
        return float(est) if est is not None else float("nan")

    def update_many(self, errors: np.ndarray, start: int) -> list[int]:
        """Feed ``errors`` (event indices ``start...``); return the indices that raised alarms."""
        if self._det is None or len(errors) == 0:
            return []
        errors = errors[np.isfinite(errors)]
        det = self._det
        found = []
        has_estimate = hasattr(det, "estimation")
        # The estimate an alarm's is compared with is read every 32 events, not after each:
        # river computes it in Python, and per event that cost more than the update itself.
        # ADWIN looks for a change only every 32 updates (its clock), and 32 events move the
        # mean of its window by little against the jump an alarm follows.
        before = 0.0
        update = det.update
        for i, e in enumerate(errors.tolist()):
            if has_estimate and not i & 31:
                before = det.estimation
            update(e)
            if det.drift_detected:
                after = det.estimation if has_estimate else 1.0
                if after > before:
                    found.append(start + i)
                else:
                    self.improvements += 1
                before = after
        self._remember(errors)
        if found:
            self.alarms += len(found)
            self.last_alarm_at = found[-1]
            # What came before the last alarm belongs to the old concept: do not replay it.
            self._count = min(self._count, start + len(errors) - 1 - found[-1])
        return found

    def _remember(self, values: np.ndarray) -> None:
        self._ring.extend(values[:, None])
        self._count = min(self._count + len(values), self.replay)

    @property
    def _recent(self) -> np.ndarray:
        """The remembered inputs, oldest first (a copy)."""
        return self._ring.last(self._count)[:, 0]

    def state_dict(self) -> dict:
        return {
            "recent": self._recent.copy(),
            "alarms": self.alarms,
            "improvements": self.improvements,
            "last_alarm_at": self.last_alarm_at,
        }

    def load_state_dict(self, state: dict) -> None:
        self.alarms = int(state["alarms"])
        self.improvements = int(state["improvements"])
        self.last_alarm_at = int(state["last_alarm_at"])
        self._ring.clear()
        self._count = 0
        self._remember(np.asarray(state["recent"], np.float64))
        if self.enabled:
            det = make_detector(self.name, self.adwin_delta)
            for e in self._recent.tolist():
                det.update(e)
            self._det = det
