"""RELIABILITY 9 for the one place a published model crosses a boundary: the shared-memory
snapshots that serving processes load. A bad artifact is refused, counted once, and serving
carries on with the version it had."""

from __future__ import annotations

import os
import pickle
import uuid

import numpy as np
import pytest

from learnd.adapters.serving.shared_snapshots import SnapshotChannel, SnapshotMirror, decode, encode
from learnd.daemon.config import SchemaConfig
from learnd.daemon.serving.compress import build_form
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, Snapshot, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

SCHEMA = SchemaConfig(task="binary", features=("a", "b"))


def dense(scale=1.0):
    rng = np.random.default_rng(1)
    return DenseWeights(
        (
            rng.normal(size=(2, 8)).astype(np.float32) * scale,
            rng.normal(size=(8, 1)).astype(np.float32),
        ),
        (np.zeros(8, np.float32), np.zeros(1, np.float32)),
        "relu",
        np.array([0.5, -1.0], np.float32),
        np.array([2.0, 0.5], np.float32),
        0.0,
        1.0,
    )


@pytest.fixture
def wired():
    ref = SnapshotRef()
    channel = SnapshotChannel(ref, uuid.uuid4().hex[:8])
    served = SnapshotRef()
    mirror = SnapshotMirror(*channel.names, served)
    yield ref, channel, served, mirror
    mirror.close()
    channel.close()


def test_snapshots_cross_as_data_and_predict_the_same(wired):
    ref, channel, served, mirror = wired
    ref.publish(Draft("binary", (0, 1), ("a", "b"), dense(), 10, {"accuracy": 0.9}))
    ref.publish(
        Draft(
            "binary",
            (0, 1),
            ("a", "b"),
            dense(2.0),
            20,
            {},
            forward=build_form("int8", dense(2.0), 0.5, 0.25),
        )
    )
    mirror.refresh()
    X = np.array([[1.0, 2.0], [-3.0, 0.5]], np.float32)
    assert served.current.version == ref.current.version == 2
    # rebuilt from its dense source on arrival (cuda-int8 where torch sees a GPU)
    assert served.current.form == ref.current.form
    assert served.current.form.endswith("-int8")
    np.testing.assert_allclose(
        served.current.predict_many(X), ref.current.predict_many(X), atol=1e-6
    )
    assert mirror.loads == 1 and mirror.rejected == 0
    first = ref.history()[0]
    again = decode(encode(first))
    assert again.info() == first.info() and not again.forward.weights[0].flags.writeable


def test_bad_shared_snapshots_are_refused_counted_once_each_and_serving_carries_on(wired, tmp_path):
    ref, channel, served, mirror = wired
    ref.publish(Draft("binary", (0, 1), ("a", "b"), dense(), 10, {}))
    mirror.refresh()
    handler = RequestHandler(served, SCHEMA)
    good = encode(ref.current)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    wrong_shape = encode(
        Snapshot.from_draft(Draft("binary", (0, 1), None, dense(), 1, {}), 5)
    ).replace(b'"layers":2', b'"layers":1')
    nan = ref.current.forward.weights[0].copy()
    nan[0, 0] = np.nan
    bad_weights = DenseWeights(
        (nan, ref.current.forward.weights[1]),
        ref.current.forward.biases,
        "relu",
        ref.current.x_mean,
        ref.current.x_inv_std,
        0.0,
        1.0,
    )
    nan_snap = encode(Snapshot.from_draft(Draft("binary", (0, 1), None, bad_weights, 1, {}), 6))
    cases = {
        "truncated": good[: len(good) // 2],
        "wrong shape": wrong_shape,
        "NaN weights": nan_snap,
        "malicious pickle": pickle.dumps(Evil()),
        "pickled array inside": good[: good.index(b"PK")] + _npz_with_object_array(),
    }
    for i, (name, data) in enumerate(cases.items()):
        before = mirror.rejected
        channel.write_blob(100 + i, data)
        mirror.refresh()
        assert mirror.rejected == before + 1, name
        assert served.current.version == 1, name
        answer = handler.handle({"op": "predict", "features": [1.0, 2.0]})
        assert answer["ok"] and answer["version"] == 1, name
    assert not marker.exists()
    ref.publish(Draft("binary", (0, 1), ("a", "b"), dense(3.0), 30, {}))
    mirror.refresh()
    assert served.current.version == ref.current.version  # and good ones still arrive


def _npz_with_object_array() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, x_mean=np.array([object()], dtype=object))
    return buf.getvalue()
