"""Forward and backward passes of learnd's MLP written out, into gradient buffers that live as
long as the model.

Why not autograd: for the small models learnd trains at batch 32, recording the graph and
walking it in ``loss.backward()`` costs about 2.5x the arithmetic itself (measured on this
project's 2-core machine: ~500 us against ~200 us for a 2->64->64->1 model), and the learning
step is what bounds examples/s. The ops here are the ones autograd runs for the same model:
``linear`` forward, ``mm``/``sum`` for a Linear layer's gradients, ``threshold_backward`` or
``tanh_backward`` for the activation, and each loss's own backward formula, in the same order,
so the gradients equal ``backward()``'s bit for bit (``tests/unit/test_backprop.py`` checks
every task and activation on CPU and CUDA).

Supported: what :func:`learnd.daemon.learning.model.build_model` builds (``nn.Linear`` layers with ``nn.ReLU``
or ``nn.Tanh`` between them) under BCE-with-logits (binary), cross-entropy (multiclass) or MSE
(regression), each the mean over the batch.

The gradients are views of one buffer, laid out like :func:`learnd.daemon.learning.model.share_one_buffer`'s
weights, so an optimizer can step the whole model as one tensor
(:class:`learnd.daemon.learning.optim_step.FusedAdamStep`).

Examples
--------
>>> import copy, torch
>>> from learnd.daemon.config import ModelConfig
>>> from learnd.daemon.learning.model import build_model
>>> net = build_model(ModelConfig(hidden=(4,)), n_inputs=2, n_outputs=1)
>>> x, y = torch.randn(8, 2), torch.ones(8, 1)
>>> ref = copy.deepcopy(net)
>>> torch.nn.functional.binary_cross_entropy_with_logits(ref(x), y).backward()
>>> bp = Backprop(net, "binary")
>>> raw, loss = bp.loss(x, y)
>>> bp.backward(y)
>>> bp.backward(y)  # the buffers are overwritten, never accumulated
>>> all(torch.equal(p.grad, q.grad) for p, q in zip(net.parameters(), ref.parameters()))
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learnd.daemon.learning.model import views_like

_aten = torch.ops.aten
MEAN = 1  # at::Reduction::Mean
NO_INDEX = -100  # nll_loss's default ignore_index


class Backprop:
    """``loss(x, target)`` runs the forward pass and keeps its activations; ``backward(target)``
    then writes the gradients of that loss into the parameters' ``.grad`` buffers."""

    def __init__(self, net: nn.Sequential, task: str):
        layers = list(net)
        self._lins = [m for m in layers[0::2] if isinstance(m, nn.Linear)]
        acts = layers[1::2]
        if len(self._lins) != len(layers[0::2]) or len(acts) != len(self._lins) - 1:
            raise ValueError("Backprop needs Linear layers with one activation between each")
        if not all(isinstance(a, nn.ReLU | nn.Tanh) for a in acts):
            raise ValueError("Backprop supports ReLU and Tanh activations")
        if task not in ("binary", "multiclass", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self._tanh = [isinstance(a, nn.Tanh) for a in acts]
        self._task = task
        params = list(net.parameters())  # weight, bias of each layer in order
        first = params[0]
        self.grad = torch.zeros(
            sum(p.numel() for p in params), device=first.device, dtype=first.dtype
        )
        for p, view in zip(params, views_like(self.grad, params), strict=True):
            p.grad = view
        # The Parameter objects stay for the model's life (loading a state copies into them).
        self._w = [lin.weight for lin in self._lins]
        self._b = [lin.bias for lin in self._lins]
        self._gw = [lin.weight.grad for lin in self._lins]
        self._gb = [lin.bias.grad for lin in self._lins]
        self._one = torch.ones((), device=first.device, dtype=first.dtype)
        self._acts: list[torch.Tensor] = []
        self._raw: torch.Tensor | None = None
        self._aux: tuple[torch.Tensor, torch.Tensor] | None = None
        self.first_grad: torch.Tensor | None = None

    @torch.no_grad()
    def loss(
        self, x: torch.Tensor, target: torch.Tensor, first: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs (logits, or standardised values) and the mean loss on ``target``.
        ``first``, when given, is added to the first layer's outputs (the rows of the events'
        categories, :mod:`learnd.daemon.learning.embeddings`); :meth:`backward` then leaves
        the gradient of those outputs in :attr:`first_grad`."""
        acts = [x]
        h = x
        w, b = self._w, self._b
        for i, tanh in enumerate(self._tanh):
            h = F.linear(h, w[i], b[i])  # what nn.Linear runs
            if first is not None and i == 0:
                h += first
            h = h.tanh_() if tanh else h.relu_()
            acts.append(h)
        raw = F.linear(h, w[-1], b[-1])
        if first is not None and not self._tanh:
            raw = raw + first
        if self._task == "binary":
            loss = F.binary_cross_entropy_with_logits(raw, target)
        elif self._task == "multiclass":
            logp = torch.log_softmax(raw, 1)
            loss, total = _aten.nll_loss_forward(logp, target, None, MEAN, NO_INDEX)
            self._aux = (logp, total)
        else:
            loss = F.mse_loss(raw, target)
        self._acts, self._raw = acts, raw
        return raw, loss

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, params: list[torch.Tensor], first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw outputs of the same layers with other weights: ``params`` holds each layer's
        weight and bias in order, as ``net.parameters()`` does (e.g. views of an average of the
        weights, :mod:`learnd.daemon.learning.averaging`). Nothing is kept for :meth:`backward`."""
        h = x
        for i, tanh in enumerate(self._tanh):
            h = F.linear(h, params[2 * i], params[2 * i + 1])
            if first is not None and i == 0:
                h += first
            h = h.tanh_() if tanh else h.relu_()
        raw = F.linear(h, params[-2], params[-1])
        return raw + first if first is not None and not self._tanh else raw

    @torch.no_grad()
    def backward(self, target: torch.Tensor) -> None:
        """Gradients of the last :meth:`loss` call, written into the ``.grad`` buffers."""
        raw = self._raw
        if raw is None:
            raise RuntimeError("backward() before loss()")
        if self._task == "binary":  # autograd's binary_cross_entropy_with_logits_backward
            dz = (torch.sigmoid(raw) - target).div_(raw.numel())
        elif self._task == "multiclass":
            assert self._aux is not None
            logp, total = self._aux
            g = _aten.nll_loss_backward(self._one, logp, target, None, MEAN, NO_INDEX, total)
            dz = _aten._log_softmax_backward_data(g, logp, 1, logp.dtype)
        else:
            dz = _aten.mse_loss_backward(self._one, raw, target, MEAN)
        for i in range(len(self._lins) - 1, -1, -1):
            a = self._acts[i]
            torch.mm(dz.t(), a, out=self._gw[i])
            torch.sum(dz, 0, out=self._gb[i])
            self.first_grad = dz  # ends as the first layer's
            if i:
                dh = torch.mm(dz, self._w[i])
                if self._tanh[i - 1]:
                    dz = _aten.tanh_backward(dh, a)
                else:
                    dz = _aten.threshold_backward(dh, a, 0)
