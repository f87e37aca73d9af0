"""The Open Inference Protocol (KServe v2) over the served snapshots, transport-agnostic.

HTTP and gRPC adapters decode their tensors into :class:`Tensor` and call :class:`OipModel`;
it answers metadata, readiness and inference as plain data, or an :class:`OipError` with a kind
(``invalid``, ``not_found``, ``unavailable``) that each transport maps to its own status code.
An inference reads the snapshot reference once (or picks one kept version) and computes every
output from that one snapshot, so ``model_version`` always names the version that produced it.

Inputs: one ``FP32`` tensor of shape ``[batch, n_features]`` in schema order, or one tensor per
feature, named after it, of shape ``[batch]`` or ``[batch, 1]`` (any numeric datatype); typed
features: one named tensor per feature, strings as ``BYTES`` (:mod:`learnd.daemon.serving.oip_typed`).
Outputs: ``prediction`` (``[batch]``: the class, ``INT64`` or ``BYTES``, or the value, ``FP32``)
and, for classification, ``scores`` (``FP32 [batch, n_classes]``, in ``classes`` order).

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config import SchemaConfig
>>> from learnd.daemon.serving.weights import DenseWeights
>>> from learnd.daemon.serving.snapshot import Draft, SnapshotRef
>>> w = DenseWeights((np.ones((2, 1), np.float32),), (np.zeros(1, np.float32),), "relu",
...                  np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 1.0)
>>> ref = SnapshotRef()
>>> _ = ref.publish(Draft("binary", (0, 1), ("a", "b"), w, 0, {}))
>>> m = OipModel(ref, SchemaConfig(task="binary", features=("a", "b")), "learnd")
>>> x = Tensor("input", "FP32", (1, 2), np.array([2.0, 0.0], np.float32))
>>> out = m.infer("learnd", None, [x])
>>> out.model_version, out.outputs[0].name, out.outputs[0].data.tolist()
('1', 'prediction', [1])
>>> m.infer("learnd", "9", [x]).kind
'not_found'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from learnd.daemon.config import SchemaConfig
from learnd.daemon.serving.oip_typed import typed_rows
from learnd.daemon.serving.snapshot import Snapshot, SnapshotRef

NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
PLATFORM = "learnd"


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named tensor: ``data`` holds ``prod(shape)`` elements (any layout numpy can reshape)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class OipError:
    kind: Literal["invalid", "not_found", "unavailable"]
    message: str


@dataclass(frozen=True, slots=True)
class InferResult:
    model_name: str
    model_version: str
    outputs: tuple[Tensor, ...]


class OipModel:
    """learnd's served model as one OIP model named ``name``, its versions the kept snapshots."""

    def __init__(
        self,
        ref: SnapshotRef,
        schema: SchemaConfig,
        name: str,
        max_batch: int = 10_000,
        ready: Callable[[], bool] | None = None,
        refresh: Callable[[], None] | None = None,
    ):
        self.ref = ref
        self.schema = schema
        self.name = name
        self.max_batch = max_batch
        self._ready = ready or (lambda: True)
        self._refresh = refresh or (lambda: None)
        self.names = schema.feature_names
        self.dim = schema.dim

    # ---- server ----
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        self._refresh()
        return self.ref.current is not None and bool(self._ready())

    def server_metadata(self, version: str) -> dict:
        return {"name": "learnd", "version": version, "extensions": []}

    # ---- model ----
    def snapshot(self, name: str, version: str | None) -> Snapshot | OipError:
        """The snapshot ``version`` of model ``name`` (None or '': the one served now)."""
        if name != self.name:
            return OipError("not_found", f"unknown model {name!r}; this server has {self.name!r}")
        self._refresh()
        current = self.ref.current
        if not version:
            if current is None:
                return OipError("unavailable", "no model has been published yet")
            return current
        kept = {str(s.version): s for s in self.ref.history()}
        snap = kept.get(version)
        if snap is None:
            return OipError(
                "not_found",
                f"version {version!r} of model {name!r} is not kept; kept versions: "
                f"{', '.join(kept) or 'none'}",
            )
        return snap

    def model_ready(self, name: str, version: str | None) -> bool | OipError:
        """A kept version is ready to answer; the unversioned model once one is served and the
        daemon reports ready. Unknown model or version: an error."""
        snap = self.snapshot(name, version)
        if isinstance(snap, OipError):
            return False if snap.kind == "unavailable" else snap
        return True if version else bool(self._ready())

    def model_metadata(self, name: str, version: str | None) -> dict | OipError:
        snap = self.snapshot(name, version)
        if isinstance(snap, OipError):
            return snap
        n = -1
        outputs = [{"name": "prediction", "datatype": _class_type(snap), "shape": [n]}]
        if snap.task != "regression":
            outputs.append({"name": "scores", "datatype": "FP32", "shape": [n, len(snap.classes)]})
        return {
            "name": self.name,
            "versions": [str(s.version) for s in self.ref.history()],
            "platform": PLATFORM,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [n, self.dim]}],
            "outputs": outputs,
            "parameters": {
                "version": str(snap.version),
                "task": snap.task,
                "classes": ",".join(str(c) for c in snap.classes),
                "features": ",".join(self.names) if self.names else "",
            },
        }

    # ---- inference ----
    def infer(
        self,
        name: str,
        version: str | None,
        inputs: Sequence[Tensor],
        requested: Sequence[str] = (),
    ) -> InferResult | OipError:
        snap = self.snapshot(name, version)
        if isinstance(snap, OipError):
            return snap
        X = self.rows(inputs)
        if isinstance(X, OipError):
            return X
        wanted = tuple(requested) or (
            ("prediction",) if snap.task == "regression" else ("prediction", "scores")
        )
        known = ("prediction",) if snap.task == "regression" else ("prediction", "scores")
        for out_name in wanted:
            if out_name not in known:
                return OipError(
                    "invalid", f"unknown output {out_name!r}; outputs: {', '.join(known)}"
                )
        out = snap.predict_many(X)
        n = X.shape[0]
        tensors = []
        for out_name in wanted:
            if out_name == "scores":
                tensors.append(Tensor("scores", "FP32", out.shape, out.astype(np.float32)))
            elif snap.task == "regression":
                tensors.append(Tensor("prediction", "FP32", (n,), out.astype(np.float32)))
            else:
                classes = np.asarray(snap.classes, dtype=object)[out.argmax(axis=1)]
                kind = _class_type(snap)
                data = classes.astype(np.int64) if kind == "INT64" else classes.astype(str)
                tensors.append(Tensor("prediction", kind, (n,), data))
        return InferResult(self.name, str(snap.version), tuple(tensors))

    def rows(self, inputs: Sequence[Tensor]) -> np.ndarray | OipError:
        """The ``(batch, n_features)`` float32 matrix the inputs describe, checked."""
        if not inputs:
            return OipError("invalid", "an inference request needs at least one input")
        if self.schema.layout is not None:  # one named input per typed feature
            typed = typed_rows(self.schema, inputs)
            if isinstance(typed, str):
                return OipError("invalid", typed)
            if typed.shape[0] > self.max_batch:
                return OipError("invalid", f"at most {self.max_batch} instances per request")
            if typed.shape[0] == 0:
                return OipError("invalid", "an inference request needs at least one instance")
            return typed
        for t in inputs:
            if any(d < 0 for d in t.shape) or int(np.prod(t.shape)) != t.data.size:
                return OipError(
                    "invalid",
                    f"input {t.name!r}: {t.data.size} elements do not fill shape {list(t.shape)}",
                )
        if (
            len(inputs) == 1
            and len(inputs[0].shape) == 2
            and inputs[0].name not in (self.names or ())
        ):
            t = inputs[0]
            if t.datatype != "FP32":
                return OipError("invalid", f"input {t.name!r} must be FP32, not {t.datatype}")
            if t.shape[1] != self.dim:
                return OipError(
                    "invalid",
                    f"input {t.name!r} has shape {list(t.shape)}; expected [batch, {self.dim}]",
                )
            X = np.asarray(t.data, np.float32).reshape(t.shape)
        else:
            X_or_error = self._named(inputs)
            if isinstance(X_or_error, OipError):
                return X_or_error
            X = X_or_error
        if X.shape[0] > self.max_batch:
            return OipError("invalid", f"at most {self.max_batch} instances per request")
        if X.shape[0] == 0:
            return OipError("invalid", "an inference request needs at least one instance")
        if not np.isfinite(X).all():
            return OipError("invalid", "inputs hold a value that is not finite")
        if np.abs(X).max() > self.schema.max_abs_value:
            return OipError(
                "invalid", f"inputs hold a magnitude above {self.schema.max_abs_value:g}"
            )
        return X

    def _named(self, inputs: Sequence[Tensor]) -> np.ndarray | OipError:
        if self.names is None:
            return OipError(
                "invalid",
                f"send one FP32 input of shape [batch, {self.dim}] (the schema has no names)",
            )
        by_name = {t.name: t for t in inputs}
        unknown = sorted(set(by_name) - set(self.names))
        if unknown or len(by_name) != len(inputs):
            return OipError(
                "invalid",
                f"inputs {unknown or 'repeated'} are not features; send one FP32 input of "
                f"shape [batch, {self.dim}] or one input per feature ({', '.join(self.names)})",
            )
        missing = [n for n in self.names if n not in by_name]
        if missing:
            return OipError("invalid", f"missing feature inputs: {', '.join(missing)}")
        cols = []
        batch = None
        for n in self.names:
            t = by_name[n]
            if t.datatype not in NUMERIC or t.datatype == "BOOL":
                return OipError("invalid", f"input {n!r} must be numeric, not {t.datatype}")
            if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
                return OipError("invalid", f"input {n!r} must have shape [batch] or [batch, 1]")
            if batch is not None and t.shape[0] != batch:
                return OipError("invalid", "feature inputs must all have the same batch size")
            batch = t.shape[0]
            cols.append(np.asarray(t.data, np.float64).reshape(-1))
        return np.stack(cols, axis=1).astype(np.float32)


def _class_type(snap: Snapshot) -> str:
    if snap.task == "regression":
        return "FP32"
    ints = all(isinstance(c, int) and not isinstance(c, bool) for c in snap.classes)
    return "INT64" if ints else "BYTES"
