"""The torch model named by the config: an MLP with configurable hidden layers, or linear.

Examples
--------
>>> from learnd.daemon.config import ModelConfig
>>> net = build_model(ModelConfig(hidden=(8,)), n_inputs=3, n_outputs=1)
>>> [tuple(p.shape) for p in net.parameters()]
[(8, 3), (8,), (1, 8), (1,)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from learnd.daemon.config import ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def build_model(cfg: ModelConfig, n_inputs: int, n_outputs: int) -> nn.Sequential:
    """Alternating ``nn.Linear`` and activation layers, seeded by ``cfg.seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    try:
        layers: list[nn.Module] = []
        width = n_inputs
        for h in cfg.hidden if cfg.kind == "mlp" else ():
            layers += [nn.Linear(width, h), ACTIVATIONS[cfg.activation]()]
            width = h
        layers.append(nn.Linear(width, n_outputs))
        if n_inputs == 0:
            # Only typed categories (their rows are added to the first layer's outputs, zero at
            # first): nn.Linear draws a bias of fan-in 0 as zeros, and every ReLU would start
            # dead with no gradient to any row. Draw it as for a fan-in of 1 (one row per event).
            nn.init.uniform_(layers[0].bias, -1.0, 1.0)  # type: ignore[arg-type]
        return nn.Sequential(*layers)
    finally:
        torch.random.set_rng_state(gen_state)


def share_one_buffer(params: list[torch.Tensor]) -> torch.Tensor:
    """Move ``params`` into one contiguous buffer (each becomes a view of it) and return it.

    Loading a state copies into the same views, so the buffer stays valid; one reduction over
    it checks every weight at once (:meth:`learnd.daemon.learning.learner.Learner.is_finite`).
    """
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    with torch.no_grad():
        for p, view in zip(params, views_like(flat, params), strict=True):
            p.data = view
    return flat


def views_like(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Consecutive slices of ``flat`` shaped as ``like``'s tensors, in order: the one layout
    the weights, their gradients and the optimizer's moments share."""
    views = []
    offset = 0
    for t in like:
        n = t.numel()
        views.append(flat[offset : offset + n].view_as(t))
        offset += n
    return views


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
