"""The learner's step on encoded typed rows: numbers through the network, categories as rows.

:meth:`learnd.daemon.learning.learner.Learner.learn_many` hands a batch here when the schema
is a ``[schema.features]`` table. A missing number (NaN in its column) is imputed with the
running mean of the column before the batch (it standardises to 0, as in serving) and enters
the statistics as that mean. Predictions use the rows values have *before* the batch is
learned (an unseen value: its bucket), then new values join the vocabulary and the step
updates the network and the touched rows (daemon/learning/embeddings.py).

The served copy folds the table into plain dense layers: the first layer's weights gain an
identity block fed by the per-event sum of rows, which
:class:`learnd.daemon.serving.typed_inputs.TypedInputs` computes from the request. Every served
form (numpy, pruned, quantized) and the gate see an ordinary network.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from learnd.daemon.config_schema import FeatureLayout
from learnd.daemon.learning.embeddings import Embeddings
from learnd.daemon.serving.typed_inputs import TypedInputs
from learnd.daemon.serving.weights import DenseWeights

# A learnd.daemon.learning.learner.Learner: these functions are its typed half, and the
# learner imports them (so they do not import it back).
Learner = Any
# What a step saw: (outputs, errors, loss, applied), as the learner's StepResult holds it.
Step = tuple[np.ndarray, np.ndarray, float, bool]


def make_embeddings(lrn: Learner, layout: FeatureLayout) -> Embeddings:
    """The table of a learner's categories: as wide as its first layer's outputs, stepped
    with its optimizer's kind and settings."""
    cfg = lrn.model_cfg
    width = cfg.hidden[0] if cfg.kind == "mlp" else lrn.schema.n_outputs
    group = lrn.optimizer.param_groups[0]
    return Embeddings(
        layout,
        width,
        lrn.learning.optimizer,
        lrn.learning.average_decay,
        tuple(group.get("betas", (0.9, 0.999))),
        group.get("eps", 1e-8),
        lrn.device,
    )


def impute(lrn: Learner, X_num: np.ndarray) -> np.ndarray:
    """Numeric columns with each missing value (NaN) replaced by its column's running mean."""
    X_num = np.asarray(X_num, np.float32)
    missing = np.isnan(X_num)
    if not missing.any():
        return X_num
    mean = np.broadcast_to(lrn.x_scaler.mean.astype(np.float32), X_num.shape)
    return np.where(missing, mean, X_num)


def typed_inputs(lrn: Learner, X: np.ndarray, add: bool) -> tuple[np.ndarray, np.ndarray]:
    """(imputed numeric columns, table rows) of encoded rows."""
    assert lrn.typed is not None
    X_num, K = lrn.typed.split(np.asarray(X, np.float32))
    return impute(lrn, X_num), lrn.typed.rows(K, add)


def rows_sum(lrn: Learner, idx: np.ndarray | None, which: str = "weights"):
    """The per-event sum of the rows ``idx`` (None without typed features)."""
    if lrn.typed is None or idx is None:
        return None
    return lrn.typed.sum(idx, which)


def rows_step(lrn: Learner, idx: np.ndarray | None, lr: float) -> None:
    """Update the rows ``idx`` from the last backward pass (nothing without typed features)."""
    grad = lrn._backprop.first_grad
    if lrn.typed is not None and idx is not None and grad is not None:
        lrn.typed.step(idx, grad, lr)


def learn_typed(lrn: Learner, X: np.ndarray, y: np.ndarray) -> Step:
    emb = lrn.typed
    assert emb is not None
    X_num, K = emb.split(np.asarray(X, np.float32))
    X_num = impute(lrn, X_num)
    if not np.isfinite(y).all():
        outputs = lrn.predict_own(X)
        lrn.skipped_steps += 1
        lrn.events_learned += len(y)
        errors = np.where(np.isfinite(y), lrn._errors(outputs, np.nan_to_num(y)), np.nan)
        return outputs, errors, float("nan"), False
    seen = emb.rows(K, add=False)  # before this batch is learned
    lrn.x_scaler.update_many(X_num)
    if lrn.task == "regression":
        lrn.y_scaler.update_many(np.asarray(y, np.float64).reshape(-1, 1))
    xb = torch.from_numpy(lrn.x_scaler.transform(X_num)).to(lrn.device)
    target = lrn._target(y)
    bp = lrn._backprop
    lrn.average.fold(lrn._flat)
    emb.fold()
    served = lrn._avg_params if lrn.average.enabled else lrn._params
    outputs = lrn._outputs(bp.forward(xb, served, emb.sum(seen, "avg")))
    idx = emb.rows(K, add=True) if emb.vocab.has_room() else seen  # full: the same rows
    lrn._idx = idx
    _, loss = bp.loss(xb, target, emb.sum(idx, "weights"))
    loss_value = float(loss)
    applied = math.isfinite(loss_value)
    if applied:
        lr = lrn.lr
        for i in range(lrn.learning.steps_per_batch):
            if i and not math.isfinite(float(bp.loss(xb, target, emb.sum(idx, "weights"))[1])):
                break
            bp.backward(target)
            lrn._fast.step(lr)
            assert bp.first_grad is not None
            emb.step(idx, bp.first_grad, lr)
            lrn.steps += 1
    else:
        lrn.skipped_steps += 1
    lrn.events_learned += len(y)
    if lrn._guard(loss_value, xb, target) and applied:
        lrn.window.add(X, y)
    return outputs, lrn._errors(outputs, y), loss_value, applied


def typed_export(
    lrn: Learner, params: list[torch.Tensor], mean: np.ndarray, inv: np.ndarray, y_std: float
) -> DenseWeights:
    """The served copy: dense layers whose first one also takes the sum of an event's rows."""
    emb = lrn.typed
    assert emb is not None
    weights = [w.detach().cpu().numpy().T.copy() for w in params[0::2]]
    width = weights[0].shape[1]
    weights[0] = np.vstack([weights[0], np.eye(width, dtype=np.float32)])
    tables = TypedInputs(emb.layout, emb.vocab.copy(), emb.export())
    return DenseWeights(
        weights=tuple(weights),
        biases=tuple(b.detach().cpu().numpy().copy() for b in params[1::2]),
        activation=lrn.model_cfg.activation,
        x_mean=np.concatenate([mean, np.zeros(width, np.float32)]),
        x_inv_std=np.concatenate([inv, np.ones(width, np.float32)]),
        y_mean=float(lrn.y_scaler.mean[0]) if lrn.task == "regression" else 0.0,
        y_std=y_std,
        typed=tables,
    )
