"""Which of two members serves: the MLP, or the linear model learned beside it.

Both members predict every micro-batch before either learns it (test-then-train), so each has a
prequential error per event. Each member's error is averaged exponentially over events (a
half-life of ``half_life`` events, bias-corrected as Adam's moments are, so that a young average
is not pulled towards zero), and the member serving keeps serving until the other's average is
below its own by more than ``margin`` (a share of the serving member's error): one comparison
per batch, and no flapping between two members that do equally well. Nothing is judged before
``min_events`` events have been scored by both, so a member loaded fresh beside a trained one
(an older checkpoint) is not preferred on a lucky first batch.

Serving one member rather than a mixture keeps the served model one ordinary network: every
served form, the gate, OIP and ``learnd export`` see the chosen member's weights, and what is
served predicts exactly as the learner does (docs/design.md, "A linear member").

Examples
--------
>>> import numpy as np
>>> sel = MemberSelection(half_life=100, margin=0.02, min_events=64)
>>> sel.update(np.ones(32), np.zeros(32)); sel.chosen  # too few events to judge
0
>>> sel.update(np.ones(32), np.zeros(32)); sel.chosen
1
>>> [round(e, 3) for e in sel.errors]
[1.0, 0.0]
"""

from __future__ import annotations

import numpy as np


class MemberSelection:
    """Exponentially weighted prequential errors of two members and the one chosen to serve."""

    def __init__(self, half_life: int, margin: float, min_events: int):
        self.decay = 0.5 ** (1.0 / half_life)
        self.margin = margin
        self.min_events = min_events
        self._sums = [0.0, 0.0]  # decayed error sums, divided by _weight for the averages
        self._weight = 0.0
        self.events = 0
        self.chosen = 0  # 0: the MLP, 1: the linear member
        self.switches = 0

    @property
    def errors(self) -> tuple[float, float]:
        """Each member's weighted average error (0 before any event)."""
        if self._weight == 0.0:
            return (0.0, 0.0)
        return (self._sums[0] / self._weight, self._sums[1] / self._weight)

    def update(self, errors_a: np.ndarray, errors_b: np.ndarray) -> None:
        """Fold in one batch of per-event errors (events where either is not finite are left
        out), then switch when the other member is better by the margin."""
        a = np.asarray(errors_a, np.float64)
        b = np.asarray(errors_b, np.float64)
        ok = np.isfinite(a) & np.isfinite(b)
        n = int(ok.sum())
        if n == 0:
            return
        # n events in one fold: each older sum decays by decay**n, the batch's events enter
        # with the weight they would have had one by one (summed geometric weights).
        d = self.decay**n
        w = (1.0 - d) / (1.0 - self.decay) / n
        self._sums[0] = d * self._sums[0] + w * float(a[ok].sum())
        self._sums[1] = d * self._sums[1] + w * float(b[ok].sum())
        self._weight = d * self._weight + w * n
        self.events += n
        if self.events < self.min_events:
            return
        errs = self.errors
        serving, other = errs[self.chosen], errs[1 - self.chosen]
        if other < serving * (1.0 - self.margin):
            self.chosen = 1 - self.chosen
            self.switches += 1

    def reset(self) -> None:
        """Forget the evidence (the serving member stays until new evidence says otherwise)."""
        self._sums = [0.0, 0.0]
        self._weight = 0.0
        self.events = 0

    def state_dict(self) -> dict:
        return {
            "sums": list(self._sums),
            "weight": self._weight,
            "events": self.events,
            "chosen": self.chosen,
            "switches": self.switches,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """``None`` (a checkpoint from before the member): no evidence, the MLP serves."""
        if state is None:
            self.reset()
            self.chosen = 0
            self.switches = 0
            return
        self._sums = [float(s) for s in state["sums"]]
        self._weight = float(state["weight"])
        self.events = int(state["events"])
        self.chosen = int(state["chosen"])
        self.switches = int(state["switches"])
