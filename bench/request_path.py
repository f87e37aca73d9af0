"""The request path without a socket: learnd's per-line work beside a plain numpy server's.

    .venv/bin/python bench/request_path.py              # 7 repeats
    .venv/bin/python bench/request_path.py --repeats 3  # quicker

The anchor is what a user could write in an afternoon for the same model: ``orjson.loads`` of a
line, the same weights and standardisation in a numpy forward, ``orjson.dumps`` of the answer.
learnd is measured through the functions its NDJSON socket server calls for each line
(``PredictionServer._prepare`` and ``_answer``: parsing, validation, the snapshot read, the
forward, the answer), with the snapshot published from the same weights. Both sides run with
numpy's BLAS limited to one thread, as the serving processes run. Runs alternate between the
two sides; each cell is the median of the repeats, in microseconds per call (per instance for
``predict_many``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learnd.adapters.cpu_threads import limit_blas_threads  # noqa: E402
from learnd.adapters.serving.oip_http import OipHttpApp  # noqa: E402
from learnd.adapters.serving.socket_server import PredictionServer  # noqa: E402
from learnd.daemon.config import SchemaConfig, ServingConfig  # noqa: E402
from learnd.daemon.serving.oip import OipModel  # noqa: E402
from learnd.daemon.serving.requests import RequestHandler  # noqa: E402
from learnd.daemon.serving.snapshot import Draft, SnapshotRef  # noqa: E402
from learnd.daemon.serving.weights import DenseWeights  # noqa: E402

FEATURES = ("x0", "x1", "x2")
HIDDEN = (64, 64)
ROW = [5.0, 4.0, 1.0]


def weights(seed: int = 3) -> DenseWeights:
    """A binary MLP 3 -> 64 -> 64 -> 1 (learnd's default shape on the SEA stream)."""
    rng = np.random.default_rng(seed)
    sizes = (len(FEATURES), *HIDDEN, 1)
    ws = tuple(
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        for a, b in zip(sizes, sizes[1:], strict=False)
    )
    bs = tuple((0.1 * rng.standard_normal(b)).astype(np.float32) for b in sizes[1:])
    return DenseWeights(
        ws, bs, "relu", np.array([5.0, 5.0, 0.5], np.float32),
        np.array([0.35, 0.35, 2.0], np.float32), 0.0, 1.0,
    )  # fmt: skip


class PlainServer:
    """The afternoon server's per-line work: same weights, same standardisation, same answer."""

    def __init__(self, w: DenseWeights, version: int):
        self.layers = list(zip(w.weights, w.biases, strict=True))
        self.mean, self.inv_std = w.x_mean, w.x_inv_std
        self.version = version

    def forward(self, X: np.ndarray) -> np.ndarray:
        z = (X - self.mean) * self.inv_std
        for i, (w, b) in enumerate(self.layers):
            z = z @ w + b
            if i < len(self.layers) - 1:
                z = np.maximum(z, 0.0)
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)

    def _answer(self, probs: np.ndarray) -> dict:
        return {
            "prediction": int(probs.argmax()),
            "scores": {"0": round(float(probs[0]), 6), "1": round(float(probs[1]), 6)},
        }

    def line(self, line: bytes) -> bytes:
        req = orjson.loads(line)
        if req.get("op", "predict") == "predict":
            probs = self.forward(np.asarray([req["features"]], np.float32))
            out = {"ok": True, "version": self.version, **self._answer(probs[0])}
        else:
            probs = self.forward(np.asarray(req["instances"], np.float32))
            out = {
                "ok": True,
                "version": self.version,
                "predictions": [self._answer(p) for p in probs],
            }
        if "id" in req:
            out["id"] = req["id"]
        return orjson.dumps(out) + b"\n"


def learnd_side() -> tuple[PredictionServer, OipHttpApp, SnapshotRef]:
    ref = SnapshotRef()
    ref.publish(Draft("binary", (0, 1), FEATURES, weights(), 0, {}))
    schema = SchemaConfig(task="binary", features=FEATURES)
    handler = RequestHandler(ref, schema)
    oip = OipHttpApp(OipModel(ref, schema, "learnd"), None, 1 << 24)
    return PredictionServer(handler, ServingConfig()), oip, ref


def oip_body(rows: list) -> bytes:
    """An OIP/HTTP infer body: one FP32 tensor of shape [batch, n_features]."""
    flat = [v for r in rows for v in r]
    tensor = {"name": "input", "datatype": "FP32", "shape": [len(rows), 3], "data": flat}
    return orjson.dumps({"id": "1", "inputs": [tensor]})


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000, help="calls per run (batch 1)")
    args = ap.parse_args()
    limit_blas_threads(1)
    server, oip, ref = learnd_side()
    snap = ref.current
    assert snap is not None
    plain = PlainServer(weights(), snap.version)

    one = orjson.dumps({"op": "predict", "features": ROW, "id": 1}) + b"\n"
    rows = np.random.default_rng(1).uniform(0, 10, (100, 3)).round(3).tolist()
    many = orjson.dumps({"op": "predict_many", "instances": rows, "id": 2}) + b"\n"
    X1, X100 = np.asarray([ROW], np.float32), np.asarray(rows, np.float32)

    def learnd_line(line: bytes) -> bytes:
        return server._answer([server._prepare(line)])

    oip_one, oip_many = oip_body([ROW]), oip_body(rows)

    def oip_infer(body: bytes) -> bytes:
        return oip._infer("learnd", None, body, None)[1]

    # Both sides give the same answers before anything is timed.
    for line in (one, many):
        a, b = orjson.loads(learnd_line(line)), orjson.loads(plain.line(line))
        got = a.get("predictions", [a])
        want = b.get("predictions", [b])
        assert [g["prediction"] for g in got] == [w["prediction"] for w in want], (a, b)
        for g, w in zip(got, want, strict=True):
            assert abs(g["scores"]["1"] - w["scores"]["1"]) <= 2e-6, (g, w)
    assert np.allclose(snap.predict_many(X100), plain.forward(X100), atol=1e-6)

    n, m = args.calls, max(1, args.calls // 30)
    cases = [  # (name, learnd, anchor, calls, instances per call)
        ("predict, bytes in -> bytes out", lambda: learnd_line(one), lambda: plain.line(one), n, 1),
        ("forward, batch 1", lambda: snap.predict_many(X1), lambda: plain.forward(X1), n, 1),
        (
            "predict_many 100, bytes in -> out",
            lambda: learnd_line(many),
            lambda: plain.line(many),
            m,
            100,
        ),
        ("forward, 100 rows", lambda: snap.predict_many(X100), lambda: plain.forward(X100), m, 100),
        (
            "OIP/HTTP predict, body in -> out",
            lambda: oip_infer(oip_one),
            lambda: plain.line(one),
            n,
            1,
        ),
        (
            "OIP/HTTP 100 rows, body in -> out",
            lambda: oip_infer(oip_many),
            lambda: plain.line(many),
            m,
            100,
        ),
    ]
    print(
        f"us per {'call':<39} {'learnd':>8} {'anchor':>8} {'ratio':>6}   (median of {args.repeats})"
    )
    for name, ours, theirs, calls, per in cases:
        per_call(ours, calls // 5 + 1)  # warm
        per_call(theirs, calls // 5 + 1)
        a, b = [], []
        for _ in range(args.repeats):  # alternating
            a.append(per_call(ours, calls) / per)
            b.append(per_call(theirs, calls) / per)
        la, lb = statistics.median(a), statistics.median(b)
        unit = "instance" if per > 1 else "call"
        print(f"{name + ' (/' + unit + ')':<46} {la:8.2f} {lb:8.2f} {la / lb:5.2f}x")


if __name__ == "__main__":
    main()
