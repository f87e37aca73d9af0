"""The list form (all numbers) learns and serves exactly as before typed features existed."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import torch

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.events.decoder import EventDecoder
from learnd.daemon.events.record import Record
from learnd.daemon.learning.learner import Learner
from learnd.daemon.serving.snapshot import Draft, Snapshot

# The digest of this run on the tree before typed features (CPU, one torch thread): decoded
# rows, every batch's outputs, the weights, Adam's moments, served and learner answers. Float
# results differ in their last bits between the kernels torch and numpy's BLAS pick for the CPU's
# instruction set, so a digest is recorded per pair of kernels, each on the tree before:
BEFORE_TYPED = {
    ("AVX2", "Haswell"): "6185677d3ec8b9899d766527ecf20ce9c7a76a6bb37d6fc2363f5a0c99d9d5a7",
}
# ... and the first one recorded, where the kernels were not noted (an AVX-512 machine).
BEFORE_TYPED_FIRST = "a426cca0f43a40ad3f3972e8fe5b5dd5114c2bafe128b9b975ad71eebb695665"


def kernels() -> tuple[str, str]:
    """torch's CPU capability and OpenBLAS's core type, as this process dispatches them."""
    from threadpoolctl import threadpool_info

    blas = [p.get("architecture") or "" for p in threadpool_info() if p["user_api"] == "blas"]
    return torch.backends.cpu.get_cpu_capability(), blas[0] if blas else ""


def digest() -> str:
    h = hashlib.sha256()
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 4)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 2] > 0).astype(int)
    recs = [
        Record(
            "t",
            0,
            i,
            orjson.dumps(
                {"features": dict(zip("abcd", map(float, X[i]), strict=True)), "label": int(y[i])}
            ),
        )
        for i in range(3000)
    ]
    features = ("a", "b", "c", "d")
    schema = SchemaConfig(task="binary", features=features)
    ok, _ = EventDecoder(schema).decode_many(recs)
    h.update(ok.X.tobytes())
    h.update(ok.y.tobytes())
    # The MLP alone: with the linear member beside it, the MLP still learns bit for bit so
    # (tests/unit/test_linear_member.py checks the served outputs are the chosen member's).
    learning = LearningConfig(lr=0.01, linear_member={"enabled": False})
    lrn = Learner(schema, ModelConfig(hidden=(16, 8)), learning, "cpu")
    for i in range(0, 3000, 32):
        r = lrn.learn_many(ok.X[i : i + 32], ok.y[i : i + 32])
        lrn.replay()
        h.update(r.outputs.tobytes())
    st = lrn.state_dict()
    for v in st["model"].values():
        h.update(v.numpy().tobytes())
    for s in st["optimizer"]["state"].values():
        h.update(s["exp_avg"].numpy().tobytes())
        h.update(s["exp_avg_sq"].numpy().tobytes())
    snap = Snapshot.from_draft(Draft("binary", (0, 1), features, lrn.export(), 0, {}), 1)
    h.update(snap.predict_many(ok.X[:200]).tobytes())
    h.update(lrn.predict_many(ok.X[:200]).tobytes())
    return h.hexdigest()


def test_a_seeded_numeric_stream_is_bit_for_bit_as_before():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = BEFORE_TYPED.get(kernels(), BEFORE_TYPED_FIRST)
        assert digest() == expected, f"kernels {kernels()}: no match with the tree before"
    finally:
        torch.set_num_threads(threads)
