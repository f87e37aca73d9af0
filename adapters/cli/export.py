"""``learnd export``: a served version as a standalone ONNX or TorchScript file.

The daemon answers ``{"op": "export", "version": N}`` with that kept version's network and
scaling (:func:`learnd.daemon.serving.requests.export_data`); this module rebuilds it as one
torch module, standardisation folded in, and writes it with ``torch.onnx.export`` (the
``export`` extra: onnx, onnxscript) or ``torch.jit.trace``. The file maps raw features
``input: float32 [batch, n_features]`` (schema order) to ``scores: float32 [batch, n_classes]``
(class probabilities, in ``classes`` order) or, for regression, ``prediction: float32 [batch]``:
the numbers the daemon serves for that version. The ONNX file's metadata names the version,
task, classes and features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ServedNetwork(nn.Module):
    """The served computation: standardise, dense layers, then the task's link."""

    def __init__(self, data: dict[str, Any]):
        super().__init__()
        self.task = str(data["task"])
        self.tanh = data["activation"] == "tanh"
        self.register_buffer("x_mean", _tensor(data["x_mean"]))
        self.register_buffer("x_inv_std", _tensor(data["x_inv_std"]))
        self.y_mean, self.y_std = float(data["y_mean"]), float(data["y_std"])
        layers = []
        for w, b in zip(data["weights"], data["biases"], strict=True):
            w_t = _tensor(w)  # (in, out), as served
            lin = nn.Linear(w_t.shape[0], w_t.shape[1])
            with torch.no_grad():
                lin.weight.copy_(w_t.T)
                lin.bias.copy_(_tensor(b))
            layers.append(lin)
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.x_mean) * self.x_inv_std
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z = layer(z)
            if i < last:
                z = torch.tanh(z) if self.tanh else torch.relu(z)
        if self.task == "binary":
            p = torch.sigmoid(z[:, 0])
            return torch.stack([1.0 - p, p], dim=1)
        if self.task == "multiclass":
            return torch.softmax(z, dim=1)
        return z[:, 0] * self.y_std + self.y_mean


def _tensor(values: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(values, np.float32))


def output_name(data: dict[str, Any]) -> str:
    return "prediction" if data["task"] == "regression" else "scores"


def export(data: dict[str, Any], fmt: str, path: str) -> None:
    """Write the network in ``data`` (an ``export`` answer) to ``path`` as ``fmt``."""
    module = ServedNetwork(data).eval()
    example = torch.zeros(2, len(data["x_mean"]))
    if fmt == "torchscript":
        with torch.no_grad():
            torch.jit.trace(module, example).save(path)
        return
    try:
        import onnx
    except ImportError as e:
        raise SystemExit(
            "learnd export --format onnx needs the export extra (pip install 'learnd[export]')"
        ) from e
    torch.onnx.export(
        module,
        (example,),
        path,
        input_names=["input"],
        output_names=[output_name(data)],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    model = onnx.load(path)
    meta = {
        "learnd_version": str(data["version"]),
        "task": str(data["task"]),
        "classes": ",".join(map(str, data["classes"])),
        "features": ",".join(data["features"] or ()),
    }
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
