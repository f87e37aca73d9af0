"""A parameter round: N learners replace their averaged state by its mean over the group.

Every ``every`` micro-batches each learner of the group runs :meth:`ParameterRound.run`: it
gathers its state (daemon/learning/state_vector.py), the group takes the mean through a
:class:`~learnd.daemon.ports.StateAverager` (an ``all_reduce`` over ``torch.distributed`` in
adapters/distributed/, in-process peers in adapters/fakes.py) and each learner scatters the
result back, so that after a round every learner holds the same model bit for bit. This is
``PeriodicModelAverager``'s scheme (local SGD), applied to the whole learner state: weights,
their average, the optimizer's moments, and the standardisers pooled rather than averaged.

Drift alarms combine at the round: a learner whose detector fires between rounds calls
:meth:`ParameterRound.note_alarm` instead of reacting at once; the round carries one flag,
set when any learner noted an alarm, and every learner then reacts through
``Learner.on_drift`` after taking the round's state (so that the reaction, which restarts the
weight average from the weights, applies to the same state everywhere).

The round needs its ``base``: the state every learner held after the last round, which pools
the standardisers without counting the shared history N times. It starts as the learner's state
at construction, which must be the same on every learner: fresh learners of one config, or the
same checkpoint.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
>>> lrn = Learner(SchemaConfig(task="binary", n_features=2), ModelConfig(hidden=(4,)),
...               LearningConfig(linear_member={"enabled": False}), device="cpu")
>>> class Alone:  # a group of one: the mean is the vector itself
...     size, rank = 1, 0
...     def mean(self, v): return v.clone()
...     def close(self): pass
>>> rnd = ParameterRound(lrn, Alone(), every=2)
>>> X, y = np.ones((32, 2), np.float32), np.ones(32, np.float32)
>>> _ = lrn.learn_many(X, y); rnd.after_batch() is None
True
>>> rnd.note_alarm()
>>> _ = lrn.learn_many(X, y); out = rnd.after_batch()
>>> out.drift, out.bytes, rnd.rounds
(True, 616, 1)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from learnd.daemon.learning.learner import Learner
from learnd.daemon.learning.state_vector import (
    counts_contribution,
    gather,
    layout,
    pooled,
    pooled_means,
    scatter,
    spread_contribution,
)
from learnd.daemon.ports import StateAverager


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What a round did: whether any learner had a drift alarm (all reacted), and the float64
    values each learner sent to the group (both reductions)."""

    drift: bool
    values: int

    @property
    def bytes(self) -> int:
        return 8 * self.values


class ParameterRound:
    """Rounds of ``learner`` with its group, one every ``every`` calls of :meth:`after_batch`.
    ``react``: what a round whose drift flag is set does (default: ``learner.on_drift`` as
    bound now, so that a caller may then route the learner's own alarms to
    :meth:`note_alarm`). ``outer_lr``: the weights move from the last round's by this times
    the mean of the learners' changes (DiLoCo's outer step, plain SGD): 1 is the mean of the
    weights (``PeriodicModelAverager``), N the sum of the changes."""

    def __init__(
        self,
        learner: Learner,
        averager: StateAverager,
        every: int,
        react: Callable[[], None] | None = None,
        outer_lr: float = 1.0,
    ):
        if every < 1:
            raise ValueError(f"every must be at least 1 batch, got {every}")
        if not outer_lr > 0:
            raise ValueError(f"outer_lr must be positive, got {outer_lr}")
        self.outer_lr = outer_lr
        self.learner = learner
        self._react = react if react is not None else learner.on_drift
        self.averager = averager
        self.every = every
        self.layout = layout(learner)
        self.base = gather(learner)
        self.batches = 0
        self.rounds = 0
        self._alarmed = False

    def note_alarm(self) -> None:
        """A drift alarm on this learner: reacted to by all at the next round."""
        self._alarmed = True

    def after_batch(self) -> RoundOutcome | None:
        """Count a learned micro-batch; run a round every ``every`` of them."""
        self.batches += 1
        return self.run() if self.batches % self.every == 0 else None

    @torch.no_grad()
    def run(self) -> RoundOutcome:
        """One round: every learner of the group must call it (it blocks until they have)."""
        lay, base, n = self.layout, self.base, self.averager.size
        own = gather(self.learner)
        flag = torch.tensor([1.0 if self._alarmed else 0.0], dtype=torch.float64)
        first = self.averager.mean(torch.cat([flag, counts_contribution(own, base, lay, n)]))
        means = pooled_means(first[1:], base, lay)
        spread = self.averager.mean(spread_contribution(own, base, lay, means, n))
        state = pooled(spread, means, lay)
        if self.outer_lr != 1.0:
            w = slice(0, lay.weights)
            state[w] = base[w] + self.outer_lr * (state[w] - base[w])
        scatter(self.learner, state)
        self.base = state
        self.rounds += 1
        self._alarmed = False
        drift = float(first[0]) > 0.0
        if drift:
            self._react()
        return RoundOutcome(drift, first.numel() + spread.numel())
