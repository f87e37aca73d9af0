"""Learning-rate policies: tiny objects with ``get(t) -> float`` and an explicit ``on_drift``.

Examples
--------
>>> s = DriftBoost(base=0.01, boost=3.0, half_life=100)
>>> s.get(0)
0.01
>>> s.on_drift(t=50)
>>> round(s.get(50), 6), round(s.get(150), 6)
(0.03, 0.02)
"""

from __future__ import annotations

import math


class DriftBoost:
    """A base rate, multiplied by ``boost`` at a drift alarm and decaying back exponentially.

    ``lr(t) = base * (1 + (boost - 1) * 0.5 ** ((t - t_drift) / half_life))`` after an alarm at
    ``t_drift``; ``base`` before any alarm. ``boost=1`` makes it a constant rate.
    """

    def __init__(self, base: float, boost: float = 1.0, half_life: int = 200):
        if base <= 0 or not math.isfinite(base):
            raise ValueError(f"base learning rate must be a positive finite number, got {base}")
        self.base = base
        self.boost = boost
        self.half_life = half_life
        self.t_drift: int | None = None

    def get(self, t: int) -> float:
        if self.t_drift is None or t < self.t_drift:
            return self.base
        decay = 0.5 ** ((t - self.t_drift) / self.half_life)
        return self.base * (1.0 + (self.boost - 1.0) * decay)

    def on_drift(self, t: int) -> None:
        self.t_drift = t

    def reset(self) -> None:
        """End any boost: the base rate from now on (a promoted challenger learns at it)."""
        self.t_drift = None

    def state_dict(self) -> dict:
        return {"t_drift": -1 if self.t_drift is None else self.t_drift}

    def load_state_dict(self, state: dict) -> None:
        t = int(state["t_drift"])
        self.t_drift = None if t < 0 else t
