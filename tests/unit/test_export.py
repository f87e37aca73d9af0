"""`learnd export`: a served version as ONNX (run in onnxruntime) and TorchScript gives the
served numbers; the export answer names the version asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnd.adapters.cli.export import export
from learnd.daemon.config import SchemaConfig
from learnd.daemon.serving.requests import RequestHandler
from tests.unit.test_oip import FEATURES, make_ref


@pytest.mark.parametrize(
    "task,classes", [("multiclass", ("x", "y", "z")), ("binary", (0, 1)), ("regression", ())]
)
def test_an_exported_version_computes_what_serving_serves(tmp_path, task, classes):
    ort = pytest.importorskip("onnxruntime", reason="the test extra's onnxruntime")
    ref = make_ref(task, classes, versions=3)
    schema = SchemaConfig(
        task=task, features=FEATURES, classes=classes if task == "multiclass" else None
    )
    handler = RequestHandler(ref, schema)
    data = handler.handle({"op": "export", "version": 2})
    assert data["ok"] and data["version"] == 2
    served = {s.version: s for s in ref.history()}[2]
    X = np.random.default_rng(1).uniform(-3, 3, (64, 3)).astype(np.float32)
    want = served.predict_many(X)
    export(data, "onnx", str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    (got,) = session.run(None, {"input": X})
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["learnd_version"] == "2" and meta["features"] == "a,b,c"
    export(data, "torchscript", str(tmp_path / "m.pt"))
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    np.testing.assert_allclose(scripted(torch.from_numpy(X)).numpy(), want, atol=1e-5, rtol=0)


def test_export_of_a_version_not_kept_is_an_error_value():
    handler = RequestHandler(
        make_ref(), SchemaConfig(task="multiclass", features=FEATURES, classes=("x", "y", "z"))
    )
    assert handler.handle({"op": "export", "version": 99})["error"] == "unknown_version"
    assert handler.handle({"op": "export", "version": "1"})["error"] == "wrong_type"
    assert handler.handle({"op": "export"})["version"] == 2
