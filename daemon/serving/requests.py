"""Answering prediction requests from the published snapshot (transport-agnostic).

A request is a decoded JSON object; the answer is a JSON-ready dict. Each answer is computed
from one read of the snapshot reference and names that snapshot's version. Malformed requests
get ``{"ok": false, "error": ..., "detail": ...}``: they never raise.

Examples
--------
>>> import numpy as np
>>> from learnd.daemon.config import SchemaConfig
>>> from learnd.daemon.serving.weights import DenseWeights
>>> from learnd.daemon.serving.snapshot import Draft, SnapshotRef
>>> schema = SchemaConfig(task="binary", features=("a", "b"))
>>> w = DenseWeights((np.ones((2, 1), np.float32),), (np.zeros(1, np.float32),), "relu",
...                  np.zeros(2, np.float32), np.ones(2, np.float32), 0.0, 1.0)
>>> ref = SnapshotRef()
>>> _ = ref.publish(Draft("binary", (0, 1), ("a", "b"), w, 0, {}))
>>> h = RequestHandler(ref, schema)
>>> h.handle({"op": "predict", "features": {"a": 2, "b": 0}, "id": 7})["prediction"]
1
>>> h.handle({"op": "predict", "features": [1]})["error"]
'wrong_dimension'
"""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.decoder import FeatureParser, feature_parser
from learnd.daemon.serving.snapshot import Snapshot, SnapshotRef

log = logging.getLogger("learnd.serving")

OPS = ("predict", "predict_many", "health", "info", "versions", "rollback", "unpin", "export")
# The operations on what is served rather than on the model: a transport runs them off the
# path of predictions (a serving process forwards them to the daemon).
CONTROL_OPS = ("versions", "rollback", "unpin", "export")
# What a plainly valid numeric value's type is (a bool is neither: ``type(True) is bool``).
_NUMBERS = frozenset((int, float))


def _error(code: str, detail: str, req_id: Any = None) -> dict:
    out = {"ok": False, "error": code, "detail": detail}
    if req_id is not None:
        out["id"] = req_id
    return out


class RequestHandler:
    """Maps one request object to one answer object."""

    def __init__(
        self,
        ref: SnapshotRef,
        schema: SchemaConfig,
        max_batch: int = 10_000,
        health: Callable[[], Mapping[str, Any]] | None = None,
        allow_rollback: bool = True,
    ):
        self.ref = ref
        self.parser = feature_parser(schema)
        # The numeric schema's quick check: a row of plainly valid numbers passes without the
        # parser; anything else goes to the parser, which names the problem (typed: always).
        self._quick = isinstance(self.parser, FeatureParser)
        self._dim = schema.dim
        self._max_abs = schema.max_abs_value
        names = schema.feature_names
        self._by_name: Callable[[dict], Any] | None = (
            None
            if names is None
            else (lambda d, only=names[0]: (d[only],))
            if len(names) == 1
            else operator.itemgetter(*names)
        )
        self.max_batch = max_batch
        self.allow_rollback = allow_rollback
        self._health = health or (lambda: {"alive": True, "ready": True, "status": "ready"})

    def handle(self, req: Any) -> dict:
        if not isinstance(req, dict):
            return _error("bad_request", "a request must be a JSON object")
        req_id = req.get("id")
        op = req.get("op", "predict")
        if op == "health":
            snap = self.ref.current
            out = {"ok": True, **self._health(), "version": snap.version if snap else None}
        elif op == "info":
            snap = self.ref.current
            if snap is None:
                return _error("not_ready", "no model has been published yet", req_id)
            out = {"ok": True, **snap.info()}
        elif op == "predict":
            out = self._predict_one(req.get("features"))
        elif op == "predict_many":
            out = self._predict_many(req.get("instances"))
        elif op == "versions":
            out = self._versions()
        elif op == "export":
            out = self._export(req.get("version"))
        elif op in ("rollback", "unpin"):
            out = self._rollback(req.get("version")) if op == "rollback" else self._unpin()
        else:
            return _error("unknown_op", f"op must be one of {', '.join(OPS)}; got {op!r}", req_id)
        if req_id is not None:
            out["id"] = req_id
        return out

    def handle_many(
        self, reqs: Sequence[Any], single: Callable[[Any], dict] | None = None
    ) -> list[dict]:
        """Answers to pipelined requests, in order. Runs of plain ``predict`` requests share one
        vectorised forward pass through the snapshot current when the run ends; any other
        request goes through ``single`` (default :meth:`handle`). The snapshot reference is
        read in request order and only moves forward, so versions never go backwards within
        the answers."""
        single = single or self.handle
        out: list[dict | None] = [None] * len(reqs)
        run_rows: list[Any] = []
        run_idx: list[int] = []

        def flush() -> None:
            snap = self.ref.current
            if not run_idx:
                return
            if snap is None:
                for i in run_idx:
                    out[i] = single(reqs[i])
            else:
                answers = _answers(snap, snap.predict_many(np.asarray(run_rows, np.float32)))
                version = snap.version
                for k, i in enumerate(run_idx):
                    answer = {"ok": True, "version": version, **answers[k]}
                    if (req_id := reqs[i].get("id")) is not None:
                        answer["id"] = req_id
                    out[i] = answer
            run_rows.clear()
            run_idx.clear()

        for i, req in enumerate(reqs):
            if isinstance(req, dict) and req.get("op", "predict") == "predict":
                row, problem = self._row(req.get("features"))
                if problem is None:
                    run_rows.append(row)
                    run_idx.append(i)
                    continue
            flush()
            out[i] = single(req)
        flush()
        return out  # type: ignore[return-value]

    def _versions(self) -> dict:
        snap = self.ref.current
        kept = [
            {k: s.info()[k] for k in ("version", "form", "trained_events", "published_unix")}
            | {"rolled_back_from": s.rolled_back_from}
            for s in self.ref.history()
        ]
        return {
            "ok": True,
            "current": snap.version if snap else None,
            "pinned": self.ref.pinned,
            "versions": kept,
        }

    def _rollback(self, version: Any) -> dict:
        if not self.allow_rollback:
            return _error("forbidden", "rollback is disabled (serving.allow_rollback)")
        if not isinstance(version, int) or isinstance(version, bool):
            return _error("wrong_type", "rollback needs an integer 'version'")
        try:
            snap = self.ref.rollback(version)
        except LookupError as e:
            return _error("unknown_version", str(e))
        log.warning(
            "rolled back: serving version %d as version %d; publishing paused until unpinned",
            snap.rolled_back_from,
            snap.version,
            extra={"event": "serving_rollback", "version": snap.version},
        )
        return {
            "ok": True,
            "version": snap.version,
            "rolled_back_from": snap.rolled_back_from,
            "pinned": True,
        }

    def _export(self, version: Any) -> dict:
        """A kept version's network and scaling as plain numbers (what ``learnd export`` turns
        into ONNX or TorchScript); no version: the one served now."""
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            return _error("wrong_type", "export takes an integer 'version' (or none)")
        kept = {s.version: s for s in self.ref.history()}
        snap = self.ref.current if version is None else kept.get(version)
        if snap is None:
            return _error("unknown_version", f"version {version} is not kept; kept: {sorted(kept)}")
        return {"ok": True, **export_data(snap)}

    def _unpin(self) -> dict:
        if not self.allow_rollback:
            return _error("forbidden", "unpin is disabled (serving.allow_rollback)")
        was = self.ref.unpin()
        if was:
            log.warning("unpinned: publishing resumes", extra={"event": "serving_unpin"})
        return {"ok": True, "was_pinned": was, "pinned": False}

    def _row(self, features: Any) -> tuple[Any, Any]:
        """The parser's ``(row, problem)``; a plainly valid numeric row skips the parser."""
        if self._quick:
            row: Any = None
            if type(features) is list:
                if len(features) == self._dim:
                    row = features
            elif type(features) is dict and self._by_name is not None:
                try:
                    row = self._by_name(features)
                except KeyError:
                    row = None
            if row is not None:
                hi = self._max_abs
                lo = -hi
                for v in row:  # NaN and inf fail the range (max_abs is finite, <= 1e38)
                    if type(v) not in _NUMBERS or not lo <= v <= hi:
                        break
                else:
                    return row, None
        return self.parser.parse(features)

    def _quick_rows(self, instances: list) -> np.ndarray | None:
        """Lists of plainly valid numbers, checked and converted in bulk; None: row by row.
        Integers convert exactly below 2**53, so only then are they taken in bulk."""
        dim = self._dim
        for feats in instances:
            if type(feats) is not list or len(feats) != dim:
                return None
        types = set(map(type, itertools.chain.from_iterable(instances)))
        if not types <= _NUMBERS or (int in types and self._max_abs >= 2**53):
            return None
        X = np.array(instances, np.float64)
        if not np.isfinite(X).all() or np.abs(X).max() > self._max_abs:
            return None
        return X.astype(np.float32)

    def _rows(self, instances: list) -> tuple[np.ndarray | None, dict | None]:
        if self._quick and len(instances) > 1 and (X := self._quick_rows(instances)) is not None:
            return X, None
        rows = []
        for i, feats in enumerate(instances):
            row, problem = self._row(feats)
            if problem is not None:
                where = f"instances[{i}]: " if len(instances) > 1 else ""
                return None, _error(str(problem[0]), where + problem[1])
            rows.append(row)
        return np.asarray(rows, np.float32), None

    def _predict_one(self, features: Any) -> dict:
        snap = self.ref.current
        if snap is None:
            return _error("not_ready", "no model has been published yet")
        X, err = self._rows([features])
        if X is None:
            return err or _error("bad_request", "no instance")
        return {"ok": True, "version": snap.version, **_answers(snap, snap.predict_many(X))[0]}

    def _predict_many(self, instances: Any) -> dict:
        if not isinstance(instances, list):
            return _error("wrong_type", "instances must be a list of feature objects or lists")
        if len(instances) > self.max_batch:
            return _error("too_large", f"at most {self.max_batch} instances per request")
        snap = self.ref.current
        if snap is None:
            return _error("not_ready", "no model has been published yet")
        if not instances:
            return {"ok": True, "version": snap.version, "predictions": []}
        X, err = self._rows(instances)
        if X is None:
            return err or _error("bad_request", "no instance")
        answers = _answers(snap, snap.predict_many(X))
        return {"ok": True, "version": snap.version, "predictions": answers}


def export_data(snap: Snapshot) -> dict:
    """A snapshot's dense network (layers ``(in, out)``, hidden activation) and its input and
    target scaling, as JSON-ready lists. A torch form (int8, fp16...) gives the dense float32
    weights it was built from."""
    fwd: Any = snap.forward
    dense = getattr(fwd, "source", None)  # a torch form keeps what it was made from
    weights, biases, activation = (
        (dense.weights, dense.biases, dense.activation)
        if dense is not None
        else (fwd.weights, fwd.biases, fwd.activation)
    )
    return {
        "version": snap.version,
        "task": snap.task,
        "classes": list(snap.classes),
        "features": list(snap.feature_names) if snap.feature_names else None,
        "form": snap.form,
        "activation": activation,
        "weights": [w.tolist() for w in weights],
        "biases": [b.tolist() for b in biases],
        "x_mean": snap.x_mean.tolist(),
        "x_inv_std": snap.x_inv_std.tolist(),
        "y_mean": snap.y_mean,
        "y_std": snap.y_std,
    }


def _answers(snap: Snapshot, out: np.ndarray) -> list[dict]:
    """Each row's answer: the value, or the first most likely class and every class's score
    rounded to 6 places (one ``argmax`` and one ``tolist`` for the whole batch)."""
    if snap.task == "regression":
        return [{"prediction": v} for v in out.tolist()]
    classes = snap.classes
    keys = [str(c) for c in classes]
    if len(out) > 8 and out.dtype == np.float32:
        # For a float32 score x, x * 1e6 is exact in float64 (24 + 20 bits), so numpy's
        # rint(x * 1e6) / 1e6 is the double Python's round(x, 6) gives, ties to even alike.
        scores = np.round(out.astype(np.float64), 6).tolist()
    else:
        scores = [[round(p, 6) for p in probs] for probs in out.tolist()]
    return [
        {"prediction": classes[k], "scores": dict(zip(keys, row, strict=True))}
        for k, row in zip(out.argmax(axis=1).tolist(), scores, strict=True)
    ]
