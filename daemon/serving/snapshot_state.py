"""Served snapshots as checkpoint state: plain arrays and numbers, checked when read back.

The checkpoint keeps the served version and the versions kept for rollback, so that a restart
serves what was served before (the gated model, not the learner's newer weights) and
``rollback`` reaches versions from before it. A snapshot is stored as the dense float32 arrays
its form is built from plus the form's name; a torch form is built again from its recipe. What
is read back is checked as a shared snapshot is: finite, and shapes that chain from the inputs
to the task's outputs; a snapshot that fails is dropped, loudly, never served.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.serving.snapshot import Draft, Snapshot
>>> from learnd.daemon.serving.weights import DenseWeights
>>> w = DenseWeights((np.ones((2, 1), np.float32),), (np.zeros(1, np.float32),), "relu",
...                  np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 1.0)
>>> snap = Snapshot.from_draft(Draft("binary", (0, 1), None, w, 7, {}), version=3)
>>> back = snapshot_from_state(snapshot_state(snap))
>>> back.version, back.trained_events, back.form
(3, 7, 'numpy-fp32')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from learnd.daemon.serving.forms import NumpyForward, frozen
from learnd.daemon.serving.snapshot import Snapshot
from learnd.daemon.serving.typed_inputs import TypedInputs
from learnd.daemon.serving.weights import DenseWeights

TASKS = ("binary", "multiclass", "regression")


class BadSnapshotState(ValueError):
    """Checkpointed snapshot state that cannot be served."""


def snapshot_state(snap: Snapshot) -> dict[str, Any]:
    """``snap`` as plain data: numpy arrays, numbers, strings and lists."""
    fwd = snap.forward
    recipe = getattr(fwd, "recipe", None)
    if recipe is not None:  # a torch form: keep what it is built from
        src: DenseWeights = fwd.source  # type: ignore[attr-defined]
        weights, biases, activation = src.weights, src.biases, src.activation
    else:
        weights, biases = fwd.weights, fwd.biases  # type: ignore[attr-defined]
        activation = fwd.activation  # type: ignore[attr-defined]
    return {
        "version": snap.version,
        "task": snap.task,
        "classes": list(snap.classes),
        "features": list(snap.feature_names) if snap.feature_names else None,
        "trained_events": snap.trained_events,
        "metrics": {k: float(v) for k, v in snap.metrics.items()},
        "published_unix": snap.published_unix,
        "latency_us": snap.latency_us,
        "rolled_back_from": snap.rolled_back_from,
        "form": fwd.form,
        "recipe": recipe,
        "activation": activation,
        "weights": [np.array(w, np.float32) for w in weights],
        "biases": [np.array(b, np.float32) for b in biases],
        "x_mean": np.array(snap.x_mean, np.float32),
        "x_inv_std": np.array(snap.x_inv_std, np.float32),
        "y_mean": snap.y_mean,
        "y_std": snap.y_std,
        **({"typed": snap.typed.state()} if snap.typed is not None else {}),
    }


def _array(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float32)


def snapshot_from_state(state: Mapping[str, Any]) -> Snapshot:
    """The snapshot in ``state``, checked; raises :class:`BadSnapshotState` with the reason."""
    try:
        task, classes = str(state["task"]), tuple(state["classes"])
        dense = DenseWeights(
            tuple(_array(w) for w in state["weights"]),
            tuple(_array(b) for b in state["biases"]),
            str(state["activation"]),
            _array(state["x_mean"]),
            _array(state["x_inv_std"]),
            float(state["y_mean"]),
            float(state["y_std"]),
            TypedInputs.from_state(state["typed"]) if state.get("typed") else None,
        )
        version, trained = int(state["version"]), int(state["trained_events"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadSnapshotState(f"unreadable: {type(e).__name__}: {e}") from None
    if task not in TASKS or dense.activation not in ("relu", "tanh"):
        raise BadSnapshotState(f"unknown task {task!r} or activation {dense.activation!r}")
    problem = dense.shape_problem(len(classes) if task == "multiclass" else 1)
    if problem is not None:
        raise BadSnapshotState(f"malformed: {problem}")
    if not dense.is_finite():
        raise BadSnapshotState("non-finite weights")
    if state.get("recipe") is not None:
        from learnd.daemon.serving.compress import build_torch_form  # torch only for a torch form

        forward: Any = build_torch_form(str(state["recipe"]), dense)
    else:
        forward = NumpyForward(dense.weights, dense.biases, dense.activation, str(state["form"]))
    latency = float(state.get("latency_us", math.nan))
    rolled = state.get("rolled_back_from")
    return Snapshot(
        version=version,
        task=task,
        classes=classes,
        feature_names=tuple(state["features"]) if state.get("features") else None,
        trained_events=trained,
        metrics=MappingProxyType({str(k): float(v) for k, v in state["metrics"].items()}),
        published_unix=float(state["published_unix"]),
        forward=forward,
        x_mean=frozen(dense.x_mean),
        x_inv_std=frozen(dense.x_inv_std),
        y_mean=dense.y_mean,
        y_std=dense.y_std,
        latency_us=latency,
        rolled_back_from=None if rolled is None else int(rolled),
        typed=dense.typed,
    )
