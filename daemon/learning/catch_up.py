"""How learnd learns while behind the log: the most careful way that keeps up with a catch-up
rate target.

Behind by ``lag`` records, while new ones reach the log at ``arriving`` a second, learnd aims to
learn at least ``arriving + lag / catch_up_s`` events per second (so a backlog shrinks by about
two thirds every ``catch_up_s`` seconds, however large it is and however fast the stream, and
the last of it is learned the way that learns best). Without the arrivals in the target, a
stream arriving faster than the careful rung learns would grow its lag until ``lag /
catch_up_s`` alone exceeded the arrival rate (30 s of the stream at the default). The ways form a ladder, slowest and most
accurate first: micro-batches of ``batch_size`` followed by rehearsal, then without it, then
batches doubling up to ``catch_up_batch_size`` (more events per second, fewer steps per event).
The pace climbs one rung at a time while the rate measured on the rung in use falls short of the
target (or was not measured yet),
and steps back down once the rung below was measured fast enough with a margin. It starts
climbing above ``catch_up_lag`` records behind; below half of that it is live again. Live,
rehearsal follows every batch up to ``learning.replay.max_lag`` records behind, and beyond it
while the rehearsing rung's measured rate meets the same target (``rehearsal_keeps_pace``).

Rates are measured on the steps themselves (an exponential average of seconds per step, per
rung, rehearsal included), with the pipeline's clock: a busy machine climbs higher.

Examples
--------
>>> pace = CatchUpPace(batch_size=32, largest=128, start_lag=1000, catch_up_s=1.0)
>>> pace.rungs
((32, True), (32, False), (64, False), (128, False))
>>> pace.observe(32, True, seconds=0.004)  # live: 8k events/s with rehearsal
>>> pace.choose(lag=500), pace.choose(lag=5000)  # live; catching up, 5k/s is enough
((32, True), (32, True))
>>> pace.choose(lag=40_000)  # 40k/s wanted: one rung up
(32, False)
>>> pace.choose(lag=40_000)  # not measured yet: taken as short, up again
(64, False)
"""

from __future__ import annotations

DOWN_MARGIN = 1.25  # a rung below is taken again only if this much faster than needed
SMOOTHING = 0.2  # weight of the newest step in the rate averages

Rung = tuple[int, bool]  # (batch size, rehearsal after each batch)


class CatchUpPace:
    def __init__(self, batch_size: int, largest: int, start_lag: int | None, catch_up_s: float):
        rungs: list[Rung] = [(batch_size, True), (batch_size, False)]
        while rungs[-1][0] * 2 <= largest:
            rungs.append((rungs[-1][0] * 2, False))
        if rungs[-1][0] != largest and largest > batch_size:
            rungs.append((largest, False))
        self.rungs = tuple(rungs)
        self.start_lag = start_lag
        self.catch_up_s = catch_up_s
        self._step_s: dict[Rung, float] = {}  # seconds per step, per rung
        self._at = 0  # the rung in use
        self.catching_up = False

    @property
    def rung(self) -> Rung:
        return self.rungs[self._at]

    @property
    def size(self) -> int:
        return self.rung[0]

    def rate(self, rung: Rung) -> float | None:
        """Events per second measured on this rung (None: not measured yet)."""
        s = self._step_s.get(rung)
        return rung[0] / s if s else None

    def observe(self, size: int, rehearsed: bool, seconds: float) -> None:
        """A micro-batch of ``size`` events (and its rehearsal, if any) took ``seconds``."""
        rung = (size, rehearsed)
        if rung not in self.rungs or seconds <= 0:
            return  # a partial batch: not a rung's rate
        old = self._step_s.get(rung)
        self._step_s[rung] = seconds if old is None else old + SMOOTHING * (seconds - old)

    def choose(self, lag: int, arriving: float = 0.0) -> Rung:
        """How to learn the next batches, behind by ``lag`` records, while ``arriving`` new
        records reach the log per second."""
        if self.start_lag is None:
            return self.rung
        if not self.catching_up and lag > self.start_lag:
            self.catching_up = True
        elif self.catching_up and lag < self.start_lag // 2:
            self.catching_up, self._at = False, 0
        if not self.catching_up:
            return self.rung
        target = arriving + lag / self.catch_up_s
        here = self.rate(self.rung)  # not measured (no full batch yet): taken as short
        if (here is None or here < target) and self._at + 1 < len(self.rungs):
            self._at += 1
        elif self._at > 0:
            below = self.rate(self.rungs[self._at - 1])
            if below is not None and below >= DOWN_MARGIN * target:
                self._at -= 1
        return self.rung

    def rehearsal_keeps_pace(self, lag: int, arriving: float = 0.0) -> bool:
        """Behind by ``lag`` records but not catching up (below ``start_lag``): whether learning
        with rehearsal, at the rate measured on it, still meets the catch-up target ``arriving +
        lag / catch_up_s`` (so a backlog too small to catch up on is still learned the careful
        way, as the last of a large one is). Not measured yet: yes, its first batch measures it.
        With catch-up off (``start_lag`` None) no pace is kept: no.

        >>> pace = CatchUpPace(batch_size=32, largest=128, start_lag=10_000, catch_up_s=30.0)
        >>> pace.rehearsal_keeps_pace(lag=5_000)
        True
        >>> pace.observe(32, True, seconds=0.004)  # 8k events/s with rehearsal
        >>> pace.rehearsal_keeps_pace(5_000, arriving=5_000), pace.rehearsal_keeps_pace(5_000, 9_000)
        (True, False)
        """
        if self.start_lag is None:
            return False
        rate = self.rate(self.rungs[0])
        return rate is None or rate >= arriving + lag / self.catch_up_s


class ArrivalRate:
    """Records reaching the log per second: how fast learned + lag grows, averaged over about
    ``window_s`` of the pipeline's clock (0 until two readings ``min_dt_s`` apart).

    >>> r = ArrivalRate(window_s=1.0)
    >>> r.observe(0.0, 1_000); r.observe(0.5, 3_500); r.rate  # 2,500 in 0.5 s
    5000.0
    >>> r.observe(1.0, 3_500); r.rate  # nothing new for 0.5 s: halfway down
    2500.0
    """

    def __init__(self, window_s: float = 1.0, min_dt_s: float = 0.05):
        self.window_s = window_s
        self.min_dt_s = min_dt_s
        self.rate = 0.0
        self._at: float | None = None
        self._seen = 0
        self._measured = False

    def observe(self, now: float, seen: int) -> None:
        """``seen``: records learned plus records not yet learned, at ``now``."""
        if self._at is None:
            self._at, self._seen = now, seen
            return
        dt = now - self._at
        if dt < self.min_dt_s:
            return
        rate = max(0.0, (seen - self._seen) / dt)
        weight = min(1.0, dt / self.window_s) if self._measured else 1.0
        self.rate += weight * (rate - self.rate)
        self._measured = True
        self._at, self._seen = now, seen
