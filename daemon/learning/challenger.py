"""A background challenger: from a drift *warning* on, a fresh model learns the new data beside
the incumbent, and takes over when it is better on a recent window. river's
``DriftRetrainingClassifier`` idea (a background model trained from the warning, swapped in on
drift), for torch, with the swap decided by measured error rather than by the alarm alone.

The warning comes from a second ADWIN on the incumbent's per-event errors, more sensitive than
the drift detector (river's ARF pairs the same two). Like drift alarms, only rises count.
A confirmed drift alarm with no challenger running starts one too. While it runs, the
challenger is tested then trained on every micro-batch the incumbent learns (its errors come
from before its own update, as the incumbent's do), and both error streams are summed over the
last ``window`` events. It is promoted when its windowed error is below the incumbent's by more
than ``margin`` and, over the newest ``recent_share`` of the window, no higher than the
incumbent's (by then an incumbent that rehearses has often re-learned the new concept, and a
fresh model would serve worse than it); it is dropped after ``max_events`` without winning.
Both the warning detector and a running challenger are part of the checkpoint.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config import ChallengerConfig, LearningConfig, ModelConfig, SchemaConfig
>>> schema = SchemaConfig(task="binary", n_features=2)
>>> make = lambda: Learner(schema, ModelConfig(hidden=(8,)), LearningConfig(), "cpu")
>>> ch = Challenger(make, ChallengerConfig(window=100, max_events=500))
>>> ch.state
'idle'
>>> ch.start(make(), at=0)
>>> ch.state
'training'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from learnd.daemon.config import ChallengerConfig
from learnd.daemon.drift.concept import DriftMonitor
from learnd.daemon.learning.learner import Learner


class Challenger:
    def __init__(self, make_learner: Callable[[], Learner], cfg: ChallengerConfig):
        self.cfg = cfg
        self.make_learner = make_learner
        self.warning = DriftMonitor("adwin", adwin_delta=cfg.warning_delta)
        self.learner: Learner | None = None
        self.started_at = -1  # event index of the warning (or alarm) that started it
        self.ended_at = -1  # events learned when the last one was promoted or dropped
        self.seen = 0  # events it has been tested on
        # (events, incumbent error sum, challenger error sum) per micro-batch, last `window`
        self._window: deque[tuple[int, float, float]] = deque()
        self.warnings = 0
        self.started = 0
        self.promoted = 0
        self.dropped = 0

    @property
    def state(self) -> str:
        return "idle" if self.learner is None else "training"

    def _sums(self) -> tuple[int, float, float]:
        """(events, incumbent errors, challenger errors) over the window (a few dozen rows)."""
        w = self._window
        return sum(r[0] for r in w), sum(r[1] for r in w), sum(r[2] for r in w)

    def _recent_sums(self) -> tuple[float, float]:
        """(incumbent errors, challenger errors) over the newest ``recent_share`` of the
        window, in whole micro-batches."""
        need = self.cfg.window * self.cfg.recent_share
        n = inc = ch = 0.0
        for events, a, b in reversed(self._window):
            n, inc, ch = n + events, inc + a, ch + b
            if n >= need:
                break
        return inc, ch

    def errors(self) -> tuple[float, float]:
        """Mean error of the incumbent and of the challenger over the current window."""
        n, inc, ch = self._sums()
        return (inc / n, ch / n) if n else (float("nan"), float("nan"))

    def warn(self, errors: np.ndarray, start: int) -> list[int]:
        """Feed the incumbent's errors to the warning detector; the indices of new warnings."""
        found = self.warning.update_many(errors, start)
        self.warnings += len(found)
        return found

    def start(self, learner: Learner, at: int) -> None:
        self.learner = learner
        self.started_at = at
        self.seen = 0
        self._window.clear()
        self.started += 1

    def observe(
        self, X: np.ndarray, y: np.ndarray, incumbent_errors: np.ndarray, rehearse: bool = False
    ) -> str | None:
        """Test then train the challenger on a micro-batch the incumbent has just learned (and
        rehearse on its own window when ``rehearse``, as the incumbent does).

        Returns ``"promote"`` when it has won (the caller adopts it, then calls
        :meth:`finish`), ``"drop"`` when it has run out of events, else None.
        """
        assert self.learner is not None
        result = self.learner.learn_many(X, y)
        if rehearse:
            self.learner.replay()
        ok = np.isfinite(incumbent_errors) & np.isfinite(result.errors)
        row = (int(ok.sum()), float(incumbent_errors[ok].sum()), float(result.errors[ok].sum()))
        self._window.append(row)
        while self._sums()[0] - self._window[0][0] >= self.cfg.window:
            self._window.popleft()
        self.seen += len(y)
        if self._sums()[0] >= self.cfg.window:
            inc, ch = self.errors()
            # classification: accuracy points; regression: a fraction of the incumbent's MAE
            margin = self.cfg.margin * (inc if self.learner.task == "regression" else 1.0)
            recent_inc, recent_ch = self._recent_sums()
            if ch < inc - margin and recent_ch <= recent_inc:
                return "promote"
        if self.seen >= self.cfg.max_events:
            return "drop"
        return None

    def finish(self, promoted: bool, at: int) -> None:
        """End the run (``at``: events learned); after a promotion the warning detector starts
        over on the new model's errors."""
        self.learner = None
        self.ended_at = at
        self._window.clear()
        if promoted:
            self.promoted += 1
            self.warning = DriftMonitor("adwin", adwin_delta=self.cfg.warning_delta)
        else:
            self.dropped += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "warning": self.warning.state_dict(),
            "learner": self.learner.state_dict() if self.learner is not None else None,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seen": self.seen,
            "window": [list(r) for r in self._window],
            "counts": [self.warnings, self.started, self.promoted, self.dropped],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warning.load_state_dict(state["warning"])
        self.learner = None
        if state["learner"] is not None:
            self.learner = self.make_learner()
            self.learner.load_state_dict(state["learner"])
        self.started_at = int(state["started_at"])
        self.ended_at = int(state["ended_at"])
        self.seen = int(state["seen"])
        self._window = deque((int(n), float(a), float(b)) for n, a, b in state["window"])
        self.warnings, self.started, self.promoted, self.dropped = map(int, state["counts"])
