"""An exponential moving average of the weights: what learnd predicts and serves with.

The optimizer's weights jump with every step on a noisy batch of 32; their average over the last
few batches is a better model of the recent data than the newest weights are (Polyak averaging,
in its exponential form). The learner trains the weights as before and predicts, exports and
serves the average. Measured with bench/quality.py (docs/design.md, "Weight averaging"), over
12 model seeds keeping up: Bananas 0.8799 -> 0.8886, ImageSegments 0.9244 -> 0.9324, Phishing
0.8973 -> 0.8971; SEA +0.2 and Agrawal +0.6 points at 100k events, Hyperplane unchanged.

The average is folded in once per micro-batch, just before the batch is predicted (so after the
previous batch's step and its rehearsal steps), never per optimizer step: the horizon is then
the same number of events whether the learner rehearses (4 or 9 steps a batch) or is behind
(1). Per step, behind the log, it cost Hyperplane 0.2 points. Between batches,
:meth:`WeightAverage.current` gives what the next fold will hold, so what is exported or
predicted at any moment has every step taken so far in it. The n-th fold since the last reset uses
``d = min(decay, (1 + n) / (WARMUP + n))`` (TensorFlow's ``ExponentialMovingAverage`` rule for
``num_updates``, with 20 for its 10), so that the average of a young model, whose newest weights
are its best, stays close to them. The average restarts from the weights at a drift alarm (the
old concept's weights are not to be averaged in), at a rollback and when a challenger is adopted.

Why not ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: it keeps a deep
copy of the module and updates it tensor by tensor. learnd's weights already live in one buffer
(:func:`learnd.daemon.learning.model.share_one_buffer`), so one ``lerp_`` over it is the whole update, and the
average, laid out as the weights are, goes through the same export, checkpoint and forward code.

Examples
--------
>>> import torch
>>> w = torch.zeros(2)
>>> avg = WeightAverage(w, decay=0.5)
>>> w += 1.0
>>> avg.fold(w)  # n = 1: d = min(0.5, 2 / 21)
>>> [round(v, 4) for v in avg.buffer.tolist()]
[0.9048, 0.9048]
>>> w += 1.0
>>> [round(v, 4) for v in avg.current(w).tolist()]  # the next fold, d = min(0.5, 3 / 22)
[1.8506, 1.8506]
>>> [round(v, 4) for v in avg.buffer.tolist()]  # not folded yet
[0.9048, 0.9048]
>>> WeightAverage(w, decay=0.0).enabled  # decay 0: predict with the newest weights
False
"""

from __future__ import annotations

import torch

# The n-th fold after a reset weighs the average by at most (1 + n) / (WARMUP + n).
WARMUP = 20


class WeightAverage:
    """``buffer``: the average of ``weights`` (one flat tensor) as of the last :meth:`fold`;
    ``now``: the buffer :meth:`current` writes."""

    def __init__(self, weights: torch.Tensor, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.buffer = weights.detach().clone()
        self.now = weights.detach().clone()
        self.folds = 0  # since the last reset

    def _weight(self, n: int) -> float:
        return min(self.decay, (1 + n) / (WARMUP + n))

    @property
    def enabled(self) -> bool:
        return self.decay > 0.0

    def fold(self, weights: torch.Tensor) -> None:
        """Move the average towards ``weights`` (a no-op when disabled)."""
        if not self.enabled:
            return
        self.folds += 1
        self.buffer.lerp_(weights.detach(), 1.0 - self._weight(self.folds))

    def current(self, weights: torch.Tensor) -> torch.Tensor:
        """The average as the next :meth:`fold` will leave it, written into :attr:`now`
        (the weights themselves when disabled)."""
        if not self.enabled:
            return self.now.copy_(weights.detach())
        d = self._weight(self.folds + 1)
        return torch.lerp(self.buffer, weights.detach(), 1.0 - d, out=self.now)

    def reset(self, weights: torch.Tensor) -> None:
        """Start again from ``weights``."""
        self.buffer.copy_(weights.detach())
        self.folds = 0

    def state_dict(self) -> dict | None:
        """None when disabled: the buffer then holds no average, and a learner with averaging
        on that loads this state starts one from the weights."""
        if not self.enabled:
            return None
        return {"buffer": self.buffer.detach().cpu().clone(), "folds": self.folds}

    def load_state_dict(self, state: dict | None, weights: torch.Tensor) -> None:
        """Restore; ``None`` or a buffer of another size (a checkpoint from before averaging,
        or of another model) starts again from ``weights``."""
        if state is None:
            self.reset(weights)
            return
        buf = torch.as_tensor(state["buffer"])
        if buf.shape != self.buffer.shape:
            self.reset(weights)
            return
        self.buffer.copy_(buf.to(self.buffer.device, self.buffer.dtype))
        self.folds = int(state["folds"])
