"""One Adam (or AdamW) step straight through the fused kernel that ``Adam.step`` itself calls.

``torch.optim.Adam(fused=True).step()`` spends ~50 us per call in Python bookkeeping (gathering
the parameters with gradients, the profiler hook, grouping tensors by device), against ~10 us
for the kernel, for the small models learnd trains at batch 32: a third of a learning step.
:class:`FusedAdamStep` makes the same call with the same tensors: the optimizer stays a
``torch.optim.Adam`` (its state, ``state_dict`` and checkpoints are untouched), and whatever the
kernel path does not cover (the first step, which creates the state; a parameter without a
gradient; options it does not take) goes through ``optimizer.step()``.
``tests/unit/test_learner.py`` checks the weights and moments equal ``step()``'s bit for bit.

Examples
--------
>>> import torch
>>> w = torch.nn.Parameter(torch.ones(3))
>>> opt = torch.optim.Adam([w], lr=0.1, fused=True)
>>> fast = FusedAdamStep(opt)
>>> for _ in range(2):
...     w.grad = torch.ones(3)
...     fast.step(0.1)
>>> [round(v, 4) for v in w.detach().tolist()], fast.kernel_steps
([0.8, 0.8, 0.8], 1)
"""

from __future__ import annotations

import torch

_KERNELS = (getattr(torch, "_fused_adam_", None), getattr(torch, "_fused_adamw_", None))


class FusedAdamStep:
    """``step(lr)``: set the group's learning rate and take one step of ``optimizer``."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        groups = optimizer.param_groups
        g = groups[0]
        self.enabled = (
            isinstance(optimizer, torch.optim.Adam)  # AdamW is a subclass
            and len(groups) == 1
            and bool(g.get("fused"))
            and not g.get("amsgrad")
            and not g.get("maximize")
            and not g.get("capturable")
            and not g.get("differentiable")
            and None not in _KERNELS
            and len({(p.device, p.dtype) for p in g["params"]}) == 1  # one kernel call
        )
        self.kernel_steps = 0

    def step(self, lr: float) -> None:
        opt = self.optimizer
        group = opt.param_groups[0]
        group["lr"] = lr
        if not self.enabled:
            opt.step()
            return
        params = group["params"]
        grads = [p.grad for p in params]
        state = opt.state
        if len(state) != len(params) or any(g is None for g in grads):
            opt.step()  # creates the state on the first step; handles a missing gradient
            return
        states = [state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        kernel = _KERNELS[1] if group.get("decoupled_weight_decay") else _KERNELS[0]
        beta1, beta2 = group["betas"]
        kernel(  # type: ignore[misc]
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            steps,
            amsgrad=False,
            lr=lr,
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
        self.kernel_steps += 1
