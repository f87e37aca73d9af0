"""One Adam (or AdamW) step straight through the fused kernel that ``Adam.step`` itself calls.

``torch.optim.Adam(fused=True).step()`` spends ~50 us per call in Python bookkeeping (gathering
the parameters with gradients, the profiler hook, grouping tensors by device), against ~10 us
for the kernel, for the small models learnd trains at batch 32: a third of a learning step.
:class:`FusedAdamStep` makes the same call with the same tensors: the optimizer stays a
``torch.optim.Adam`` (its state, ``state_dict`` and checkpoints are untouched), and whatever the
kernel path does not cover (the first step, which creates the state; a parameter without a
gradient; options it does not take) goes through ``optimizer.step()``.
``tests/unit/test_learner.py`` checks the weights and moments equal ``step()``'s bit for bit.

Given the buffers that hold all the weights and all the gradients
(:func:`learnd.daemon.learning.model.share_one_buffer`, :class:`learnd.daemon.learning.backprop.Backprop`), the moments are
moved into two buffers laid out the same way (each parameter's ``exp_avg``/``exp_avg_sq``
becomes a view of them) with one step counter, and the kernel runs once over the whole model
instead of once per tensor: ~12 us against ~50 us a step here. Whenever the optimizer's state
is replaced (a checkpoint or rollback loaded, the state cleared) the new tensors are moved in
again at the next step.

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

import copy

import torch

from learnd.daemon.learning.model import views_like

_KERNELS = (getattr(torch, "_fused_adam_", None), getattr(torch, "_fused_adamw_", None))


class FusedAdamStep:
    """``step(lr)``: set the group's learning rate and take one step of ``optimizer``.

    ``flat_params``/``flat_grads``: buffers whose consecutive slices are the parameters and
    their gradients, in the group's order (optional: without them, one kernel call covers the
    parameters tensor by tensor)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        flat_params: torch.Tensor | None = None,
        flat_grads: torch.Tensor | None = None,
    ):
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
        self._flat = None
        # On CUDA, Adam's L2 weight decay through the kernel over one flat tensor differed
        # from the per-tensor call in the last bits (seen on an H100; AdamW and no decay were
        # equal bit for bit): there it keeps the per-tensor call.
        l2_on_cuda = (
            g["weight_decay"] != 0
            and not g.get("decoupled_weight_decay")
            and any(p.device.type == "cuda" for p in g["params"])
        )
        if flat_params is not None and flat_grads is not None and not l2_on_cuda:
            params = g["params"]
            if _slices_of(flat_params, params) and _slices_of(flat_grads, [p.grad for p in params]):
                self._flat = (flat_params, flat_grads)
        # (exp_avg, exp_avg_sq, step) per parameter, as moved into the flat buffers
        self._bound: list[tuple[torch.Tensor, ...]] = []
        self._moments: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.kernel_steps = 0

    @property
    def flat(self) -> bool:
        """Whether steps run over the whole model as one tensor."""
        return self._flat is not None

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
        if self._flat is not None and self._bind(params, states):
            assert self._moments is not None
            exp_avg, exp_avg_sq, step = self._moments
            step.add_(1)
            self._kernel(group, [self._flat[0]], [self._flat[1]], [exp_avg], [exp_avg_sq], [step])
            return
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        self._kernel(
            group,
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            steps,
        )

    def _kernel(self, group, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        kernel = _KERNELS[1] if group.get("decoupled_weight_decay") else _KERNELS[0]
        beta1, beta2 = group["betas"]
        kernel(  # type: ignore[misc]
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )
        self.kernel_steps += 1

    def _bind(self, params: list[torch.Tensor], states: list[dict]) -> bool:
        """Make every parameter's moments views of two flat buffers sharing one step counter
        (once, and again after the state was replaced). False when the parameters' step counts
        differ (never so in learnd: every step updates every parameter)."""
        bound = self._bound
        if len(bound) == len(states) and all(
            s["exp_avg"] is m and s["exp_avg_sq"] is v and s["step"] is t
            for s, (m, v, t) in zip(states, bound, strict=True)
        ):
            return True
        first = states[0]["step"]
        if any(not torch.equal(s["step"], first) for s in states):
            return False
        exp_avg = torch.cat([s["exp_avg"].reshape(-1) for s in states])
        exp_avg_sq = torch.cat([s["exp_avg_sq"].reshape(-1) for s in states])
        step = first.clone()
        self._bound = []
        views = zip(views_like(exp_avg, params), views_like(exp_avg_sq, params), strict=True)
        for s, (m, v) in zip(states, views, strict=True):
            s["exp_avg"], s["exp_avg_sq"], s["step"] = m, v, step
            self._bound.append((m, v, step))
        self._moments = (exp_avg, exp_avg_sq, step)
        return True


def _slices_of(flat: torch.Tensor, tensors: list) -> bool:
    """Whether ``tensors`` are, in order, consecutive slices of the 1-d tensor ``flat``."""
    if flat.dim() != 1 or not flat.is_contiguous():
        return False
    offset = 0
    size = flat.element_size()
    for t in tensors:
        if (
            t is None
            or not t.is_contiguous()
            or t.dtype != flat.dtype
            or t.device != flat.device
            or t.data_ptr() != flat.data_ptr() + offset * size
        ):
            return False
        offset += t.numel()
    return offset == flat.numel()


def on_cpu(obj):
    """A deep copy of a (nested) optimizer state with every tensor on the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(on_cpu(v) for v in obj)
    return copy.deepcopy(obj)
