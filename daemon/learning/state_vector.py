"""A learner's averaged state as one float64 vector, and the pooled combination of N of them.

N learners keep one model by averaging their state every few batches (periodic model averaging,
as ``torch.distributed.algorithms.model_averaging.averagers.PeriodicModelAverager``, local SGD and
DiLoCo do; daemon/learning/parameter_round.py runs a round). This module says what is averaged,
as pure functions over a :class:`~learnd.daemon.learning.learner.Learner`:

Averaged (in this order in the vector, the *layout*):

- the weights: the one buffer they all share (``Learner.flat_weights``), as float64;
- the moving average of the weights that predicts and is served (daemon/learning/averaging.py),
  when averaging is on;
- the optimizer's moments, parameter by parameter in the model's order: ``exp_avg`` and
  ``exp_avg_sq`` for Adam and AdamW, ``sum`` for Adagrad, none for SGD (learnd's SGD has no
  momentum); a learner that has not stepped yet holds Adam's initial zeros;
- the input standardiser's and the regression target scaler's ``count``, ``mean`` and ``m2``
  (daemon/learning/normalizer.py), *pooled*, not averaged: after a round every learner holds
  the statistics of one standardiser that saw every learner's events.

Local (never in the vector): step counters (the learner's, the optimizer's ``step`` used for
Adam's bias correction, the weight average's fold count), the learning-rate policy and its drift
boost, the drift detectors, the replay window, the loss average and rollback target, the
challenger. Alarms are combined at the round instead (daemon/learning/parameter_round.py).

Pooling. Between rounds learner ``i``'s standardiser is the round's ``base`` plus its own events
``D_i``. In coordinates linear in the data (count ``n``, shifted sum ``S1 = n (mean - c)``,
shifted square sum ``Q = m2 + n (mean - c)^2`` for a shift ``c`` common to all learners), the
pooled statistics are ``base + sum_i (own_i - base)``, so each learner contributes
``base + N (own_i - base)`` and the *mean* of the contributions (one ``all_reduce`` SUM, divided
by N) is the pool. Two reductions: the counts and shifted sums first (shift: the base's mean),
which give the pooled mean; then ``Q`` shifted by that pooled mean, so that ``m2`` is a sum of
small squares and never the difference of two large ones (a constant column stays constant).

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
>>> lrn = Learner(SchemaConfig(task="binary", n_features=2), ModelConfig(hidden=(4,)),
...               LearningConfig(linear_member={"enabled": False}), device="cpu")
>>> lay = layout(lrn)
>>> lay.weights, lay.size  # 4 x 17 dense, x: 1 + 2 x 2, y: 3
(17, 76)
>>> v = gather(lrn)
>>> scatter(lrn, v)
>>> bool((gather(lrn) == v).all())
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnd.daemon.errors import StartupError
from learnd.daemon.learning.learner import Learner

# The optimizer state averaged, per parameter, by optimizer name.
MOMENTS: dict[str, tuple[str, ...]] = {
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
    "adagrad": ("sum",),
    "sgd": (),
}


@dataclass(frozen=True, slots=True)
class Layout:
    """Section sizes of a learner's state vector: ``weights`` floats, then the weight average
    (``weights`` or 0), ``len(moments)`` blocks of ``weights``, then two scalers of ``x_dim``
    and 1 columns, each ``count``, ``mean`` (dim), ``m2`` (dim)."""

    weights: int
    averaged_weights: bool
    moments: tuple[str, ...]
    x_dim: int

    @property
    def dense(self) -> int:
        """Floats before the scalers: weights, their average, the moments."""
        return self.weights * (1 + self.averaged_weights + len(self.moments))

    @property
    def x_start(self) -> int:
        return self.dense

    @property
    def y_start(self) -> int:
        return self.dense + 1 + 2 * self.x_dim

    @property
    def size(self) -> int:
        return self.y_start + 3

    def scalers(self) -> tuple[tuple[int, int], ...]:
        """``(start, dim)`` of each scaler's section."""
        return ((self.x_start, self.x_dim), (self.y_start, 1))


def layout(learner: Learner) -> Layout:
    """The vector's layout for ``learner``; typed features (embedding tables) and a linear
    member are not averaged and are refused."""
    if learner.typed is not None:
        raise StartupError("parameter averaging covers dense features only, not typed ones")
    if learner.member is not None:
        raise StartupError(
            "parameter averaging covers one network: set learning.linear_member.enabled = false"
        )
    return Layout(
        weights=learner.flat_weights.numel(),
        averaged_weights=learner.average.enabled,
        moments=MOMENTS[learner.learning.optimizer],
        x_dim=learner.x_scaler.dim,
    )


def _scaler_parts(s) -> list[torch.Tensor]:
    return [
        torch.tensor([float(s.count)], dtype=torch.float64),
        torch.from_numpy(s.mean.astype("float64", copy=True)),
        torch.from_numpy(s.state_dict()["m2"]),
    ]


@torch.no_grad()
def gather(learner: Learner) -> torch.Tensor:
    """The learner's averaged state as one float64 CPU vector laid out as :func:`layout` says."""
    lay = layout(learner)
    parts = [learner.flat_weights.detach().double().cpu()]
    if lay.averaged_weights:
        parts.append(learner.average.buffer.detach().double().cpu())
    params = list(learner.net.parameters())
    state = learner.optimizer.state
    for key in lay.moments:
        for p in params:
            t = state[p].get(key) if p in state else None
            parts.append(
                torch.zeros(p.numel(), dtype=torch.float64)
                if t is None
                else t.detach().reshape(-1).double().cpu()
            )
    parts += _scaler_parts(learner.x_scaler) + _scaler_parts(learner.y_scaler)
    return torch.cat(parts)


@torch.no_grad()
def scatter(learner: Learner, vector: torch.Tensor) -> None:
    """Write ``vector`` (from :func:`gather` or a round) into the learner, in place: the same
    tensors keep holding the weights and moments. Local state is left as it is."""
    lay = layout(learner)
    if vector.shape != (lay.size,):
        raise ValueError(f"state vector of shape {tuple(vector.shape)}, expected ({lay.size},)")
    vector = vector.detach().to("cpu", torch.float64)
    flat = learner.flat_weights
    n = lay.weights
    flat.copy_(vector[:n].to(flat.device, flat.dtype))
    at = n
    if lay.averaged_weights:
        buf = learner.average.buffer
        buf.copy_(vector[at : at + n].to(buf.device, buf.dtype))
        at += n
    params = list(learner.net.parameters())
    state = learner.optimizer.state
    for key in lay.moments:
        for p in params:
            if p not in state or key not in state[p]:
                state[p].update(_fresh_state(p, lay.moments))
            t = state[p][key]
            k = p.numel()
            t.copy_(vector[at : at + k].view_as(t).to(t.device, t.dtype))
            at += k
    for scaler, (start, dim) in zip(
        (learner.x_scaler, learner.y_scaler), lay.scalers(), strict=True
    ):
        v = vector[start : start + 1 + 2 * dim].numpy()
        scaler.load_state_dict(
            {"count": int(v[0]), "mean": v[1 : 1 + dim].copy(), "m2": v[1 + dim :].copy()}
        )


def _fresh_state(p: torch.Tensor, moments: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Optimizer state as the optimizer's first step creates it (Adam's fused step counter is a
    float32 scalar on the parameter's device), for a learner that has not stepped yet."""
    out = {k: torch.zeros_like(p, memory_format=torch.preserve_format) for k in moments}
    if "exp_avg" in moments:
        out["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
    return out


def counts_contribution(own: torch.Tensor, base: torch.Tensor, lay: Layout, n_peers: int):
    """First reduction: per scaler ``count`` and ``S1`` (shift: the base's mean) as
    ``base + N (own - base)``; the mean over the N learners is the pool's. ``base`` is the
    state vector every learner held after the last round (or at the start)."""
    out = []
    for start, dim in lay.scalers():
        n_b, mean_b = base[start], base[start + 1 : start + 1 + dim]
        n_i, mean_i = own[start], own[start + 1 : start + 1 + dim]
        out += [(n_b + n_peers * (n_i - n_b)).reshape(1), n_peers * n_i * (mean_i - mean_b)]
    return torch.cat(out)


def pooled_means(counts_mean: torch.Tensor, base: torch.Tensor, lay: Layout):
    """``(count, mean)`` of each pooled scaler from the mean of :func:`counts_contribution`."""
    out = []
    at = 0
    for start, dim in lay.scalers():
        n_p, s1 = counts_mean[at], counts_mean[at + 1 : at + 1 + dim]
        mean_b = base[start + 1 : start + 1 + dim]
        out.append((n_p, mean_b + s1 / n_p if float(n_p) > 0 else mean_b.clone()))
        at += 1 + dim
    return out


def spread_contribution(own: torch.Tensor, base: torch.Tensor, lay: Layout, means, n_peers: int):
    """Second reduction: the dense state as it is (its mean is the average) and per scaler
    ``Q = m2 + n (mean - pooled mean)^2`` as ``base + N (own - base)``."""
    out = [own[: lay.dense]]
    for (start, dim), (_, mean_p) in zip(lay.scalers(), means, strict=True):
        q_b = _shifted_squares(base, start, dim, mean_p)
        out.append(q_b + n_peers * (_shifted_squares(own, start, dim, mean_p) - q_b))
    return torch.cat(out)


def _shifted_squares(v: torch.Tensor, start: int, dim: int, shift: torch.Tensor) -> torch.Tensor:
    """``Q = m2 + n (mean - shift)^2`` of the scaler section at ``start``: its data's squared
    deviations from ``shift``, summed."""
    d = v[start + 1 : start + 1 + dim] - shift
    return v[start + 1 + dim : start + 1 + 2 * dim] + v[start] * d * d


def pooled(spread_mean: torch.Tensor, means, lay: Layout) -> torch.Tensor:
    """The round's state vector: the averaged dense state and the pooled scalers."""
    parts = [spread_mean[: lay.dense]]
    at = lay.dense
    for (_, dim), (n_p, mean_p) in zip(lay.scalers(), means, strict=True):
        m2 = spread_mean[at : at + dim].clamp(min=0.0)
        parts += [n_p.reshape(1), mean_p, m2]
        at += dim
    return torch.cat(parts)
