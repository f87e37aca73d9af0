"""How large the micro-batches are while behind the log: the smallest that keep up with a
catch-up rate target.

Behind by ``lag`` records, learnd aims to learn at least ``lag / catch_up_s`` events per second
(so a backlog shrinks by about two thirds every ``catch_up_s`` seconds, however large it is, and
the last of it is learned in the small batches that learn best). Larger batches learn more
events per second but take fewer steps per event, and cost accuracy; so the pace climbs a ladder
of batch sizes, ``batch_size`` doubling up to ``catch_up_batch_size``, one rung while the rate
measured on the rung in use falls short of the target, and steps back down once the rung below
was measured fast enough with a margin. Below ``catch_up_lag / 2`` records behind it is back to
``batch_size``; it starts climbing above ``catch_up_lag``.

Rates are measured on the steps themselves (an exponential average of seconds per step, per
rung), with the pipeline's clock: a busy machine climbs higher.

Examples
--------
>>> pace = CatchUpPace(batch_size=32, largest=256, start_lag=1000, catch_up_s=1.0)
>>> pace.rungs
(32, 64, 128, 256)
>>> pace.choose(lag=500), pace.choose(lag=5000)  # below catch_up_lag; above, but unmeasured
(32, 32)
>>> pace.observe(32, seconds=0.002)  # 16k events/s: enough for 5k/s
>>> pace.choose(lag=5000)
32
>>> pace.choose(lag=40_000)  # 40k/s wanted: one rung up
64
"""

from __future__ import annotations

DOWN_MARGIN = 1.25  # a rung below is taken again only if this much faster than needed
SMOOTHING = 0.2  # weight of the newest step in the rate averages


class CatchUpPace:
    def __init__(self, batch_size: int, largest: int, start_lag: int | None, catch_up_s: float):
        rungs = [batch_size]
        while rungs[-1] * 2 <= largest:
            rungs.append(rungs[-1] * 2)
        if rungs[-1] != largest:
            rungs.append(largest)
        self.rungs = tuple(rungs)
        self.start_lag = start_lag
        self.catch_up_s = catch_up_s
        self._step_s: dict[int, float] = {}  # seconds per step, per rung
        self._at = 0  # the rung in use
        self.catching_up = False

    @property
    def size(self) -> int:
        return self.rungs[self._at]

    def rate(self, size: int) -> float | None:
        """Events per second measured at this batch size (None: not measured yet)."""
        s = self._step_s.get(size)
        return size / s if s else None

    def observe(self, size: int, seconds: float) -> None:
        """A learning step of ``size`` events took ``seconds`` (rehearsal included)."""
        if size not in self.rungs or seconds <= 0:
            return  # a partial batch: not a rung's rate
        old = self._step_s.get(size)
        self._step_s[size] = seconds if old is None else old + SMOOTHING * (seconds - old)

    def choose(self, lag: int) -> int:
        """The batch size to learn the next batches in, behind by ``lag`` records."""
        if self.start_lag is None:
            return self.size
        if not self.catching_up and lag > self.start_lag:
            self.catching_up = True
        elif self.catching_up and lag < self.start_lag // 2:
            self.catching_up, self._at = False, 0
        if not self.catching_up:
            return self.size
        target = lag / self.catch_up_s
        here = self.rate(self.size)
        if here is not None and here < target and self._at + 1 < len(self.rungs):
            self._at += 1
        elif self._at > 0:
            below = self.rate(self.rungs[self._at - 1])
            if below is not None and below >= DOWN_MARGIN * target:
                self._at -= 1
        return self.size
