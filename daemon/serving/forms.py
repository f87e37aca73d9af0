"""Served forward passes: the same network in different forms (numpy fp32, torch int8, fp16...).

A form maps *standardised* inputs ``(n, d)`` to raw network outputs ``(n, k)`` (logits, or the
scaled regression value). Scaling in and the link function out stay in
:class:`learnd.daemon.serving.snapshot.Snapshot`, so every form shares them. A form is immutable once built:
serving threads call it concurrently while the learner trains other tensors.

Examples
--------
>>> import numpy as np
>>> f = NumpyForward((np.eye(2, dtype=np.float32),), (np.ones(2, np.float32),), "relu")
>>> f(np.array([[1.0, -3.0]], np.float32)).tolist()
[[2.0, -2.0]]
>>> f.form, f.n_parameters, f.size_bytes
('numpy-fp32', 6, 24)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # torch is imported only where a torch form is built or unpickled:
    import torch  # a serving process that serves numpy forms never loads it


class Forward(Protocol):
    form: str
    n_parameters: int
    size_bytes: int
    sparsity: float

    def __call__(self, Z: np.ndarray) -> np.ndarray: ...


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only float32 copy: what a served model may hold."""
    a = np.array(a, dtype=np.float32, copy=True)
    a.flags.writeable = False
    return a


class NumpyForward:
    """Dense float32 layers evaluated with numpy: the fastest form for small models at batch 1
    (no dispatcher, no autograd bookkeeping)."""

    def __init__(
        self,
        weights: tuple[np.ndarray, ...],
        biases: tuple[np.ndarray, ...],
        activation: str,
        form: str = "numpy-fp32",
    ):
        self.weights = tuple(frozen(w) for w in weights)  # each (in, out)
        self.biases = tuple(frozen(b) for b in biases)
        self.activation = activation
        self.form = form
        self.n_parameters = sum(a.size for a in (*self.weights, *self.biases))
        self.size_bytes = sum(a.nbytes for a in (*self.weights, *self.biases))
        total = sum(w.size for w in self.weights)
        zeros = sum(int(w.size - np.count_nonzero(w)) for w in self.weights)
        self.sparsity = zeros / total if total else 0.0

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        z = np.asarray(Z, np.float32)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = z @ w
            z += b
            if i < last:
                if self.activation == "relu":
                    np.maximum(z, 0.0, out=z)
                else:
                    np.tanh(z, out=z)
        return z


def _plain(weight: torch.Tensor) -> torch.Tensor | None:
    """A plain float tensor of a (possibly quantized or tensor-subclass) weight; None when its
    layout cannot be read back (its size is still reported, its sparsity not)."""
    import torch
    from torch import nn

    if weight.is_quantized or type(weight) not in (torch.Tensor, nn.Parameter):
        try:
            return weight.dequantize()
        except (AttributeError, NotImplementedError, RuntimeError):
            return None
    return weight


def _nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds. A wrapper subclass (torchao's int8 weights) reports its logical
    dtype's element size, so its inner tensors (int8 data, scales) are counted instead."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        return sum(_nbytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def _module_size(module: Any) -> tuple[int, int, float]:
    """(parameters, bytes, sparsity of the weight matrices) of a float or quantized module."""
    import torch

    n = size = total = zeros = 0
    for m in module.modules():
        weight = getattr(m, "weight", None)
        if callable(weight):  # dynamically quantized Linear: weight() is a packed int8 tensor
            weight = weight()
        if not torch.is_tensor(weight):
            continue
        w = _plain(weight)
        bias = m.bias() if callable(getattr(m, "bias", None)) else getattr(m, "bias", None)
        n += weight.numel() + (bias.numel() if torch.is_tensor(bias) else 0)
        size += _nbytes(weight) + (_nbytes(bias) if torch.is_tensor(bias) else 0)
        total += weight.numel()
        zeros += int((w == 0).sum()) if w is not None else 0
    return n, size, (zeros / total if total else 0.0)


class TorchForward:
    """A torch module in inference mode on a given device and dtype (fp32, dynamic int8 on the
    CPU, fp16/bf16 on CUDA)."""

    def __init__(self, module: Any, device: torch.device, dtype: torch.dtype, form: str):
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.device = device
        self.dtype = dtype
        self.form = form
        self.n_parameters, self.size_bytes, self.sparsity = _module_size(self.module)
        # How to build this form again elsewhere (a serving process): the compress form name
        # and the dense weights it was made from. Set by learnd.daemon.serving.compress.build_form.
        self.recipe: str | None = None
        self.source: Any = None

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        import torch  # already loaded: this object holds torch tensors

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(Z, np.float32))
            x = x.to(self.device, self.dtype, non_blocking=False)
            return self.module(x).float().cpu().numpy()
