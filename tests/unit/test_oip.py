"""The Open Inference Protocol's core (daemon/serving/oip.py), its HTTP decoding, its gRPC
descriptor and its config keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from learnd.daemon.config import LearndConfig, SchemaConfig, ServingConfig
from learnd.daemon.serving.oip import OipError, OipModel, Tensor
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef
from learnd.daemon.serving.weights import DenseWeights

FEATURES = ("a", "b", "c")
RNG = np.random.default_rng(0)


def make_ref(task="multiclass", classes=("x", "y", "z"), versions=2):
    k = len(classes) if task == "multiclass" else 1
    ref = SnapshotRef(keep=3)
    for seed in range(versions):
        r = np.random.default_rng(seed)
        w = DenseWeights(
            (r.normal(size=(3, 4)).astype(np.float32), r.normal(size=(4, k)).astype(np.float32)),
            (np.zeros(4, np.float32), np.zeros(k, np.float32)),
            "tanh",
            np.ones(3, np.float32),
            np.full(3, 0.5, np.float32),
            2.0,
            3.0,
        )
        ref.publish(Draft(task, classes, FEATURES, w, 0, {}))
    return ref


def model(ref, task="multiclass", classes=("x", "y", "z")):
    schema = SchemaConfig(task=task, features=FEATURES, classes=classes or None)
    return OipModel(ref, schema, "learnd", max_batch=50)


def matrix(X, dt="FP32", name="input"):
    return Tensor(name, dt, X.shape, X.reshape(-1))


@pytest.mark.parametrize(
    "task,classes,kind", [("multiclass", ("x", "y", "z"), "BYTES"), ("binary", None, "INT64")]
)
def test_infer_equals_the_ndjson_handler_for_matrix_and_named_inputs(task, classes, kind):
    ref = make_ref(task, classes or (0, 1))
    m = model(ref, task, classes)
    X = RNG.uniform(-3, 3, (7, 3)).astype(np.float32)
    ndjson = RequestHandler(ref, m.schema).handle({"op": "predict_many", "instances": X.tolist()})
    by_matrix = m.infer("learnd", None, [matrix(X)])
    named = [Tensor(n, "FP64", (7,), X[:, j].astype(np.float64)) for j, n in enumerate(FEATURES)]
    by_name = m.infer("learnd", "", named[::-1])  # any order
    for out in (by_matrix, by_name):
        assert out.model_version == str(ndjson["version"]) == "2"
        pred, scores = out.outputs
        assert pred.datatype == kind
        assert pred.data.tolist() == [p["prediction"] for p in ndjson["predictions"]]
        names = [str(c) for c in ref.current.classes]
        want = [[p["scores"][c] for c in names] for p in ndjson["predictions"]]
        np.testing.assert_allclose(scores.data, want, atol=6e-7)


def test_a_kept_version_answers_from_that_version_and_regression_gives_one_output():
    ref = make_ref("regression", (), versions=3)
    m = model(ref, "regression", None)
    X = RNG.uniform(-3, 3, (4, 3)).astype(np.float32)
    old = {s.version: s for s in ref.history()}[2]
    out = m.infer("learnd", "2", [matrix(X)])
    assert out.model_version == "2" and [t.name for t in out.outputs] == ["prediction"]
    np.testing.assert_array_equal(out.outputs[0].data, old.predict_many(X).astype(np.float32))
    assert m.model_metadata("learnd", None)["versions"] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "inputs,requested,kind,says",
    [
        ([], (), "invalid", "at least one input"),
        ([matrix(np.ones((2, 4), np.float32))], (), "invalid", "expected [batch, 3]"),
        ([matrix(np.ones((2, 3), np.int64), "INT64")], (), "invalid", "must be FP32"),
        ([Tensor("input", "FP32", (2, 3), np.ones(5, np.float32))], (), "invalid", "do not fill"),
        ([matrix(np.full((1, 3), np.nan, np.float32))], (), "invalid", "not finite"),
        ([matrix(np.ones((51, 3), np.float32))], (), "invalid", "at most 50"),
        ([matrix(np.ones((0, 3), np.float32))], (), "invalid", "at least one instance"),
        ([matrix(np.ones((1, 3), np.float32))], ("nope",), "invalid", "unknown output"),
        ([Tensor("a", "FP32", (1,), np.ones(1, np.float32))], (), "invalid", "missing feature"),
        ([Tensor("q", "FP32", (1,), np.ones(1, np.float32))], (), "invalid", "are not features"),
    ],
)
def test_malformed_inputs_are_values_naming_the_problem(inputs, requested, kind, says):
    err = model(make_ref()).infer("learnd", None, inputs, requested)
    assert isinstance(err, OipError) and err.kind == kind and says in err.message, err


def test_unknown_model_or_version_and_no_model_yet():
    m = model(make_ref())
    assert m.infer("other", None, [matrix(np.ones((1, 3), np.float32))]).kind == "not_found"
    assert m.infer("learnd", "7", [matrix(np.ones((1, 3), np.float32))]).kind == "not_found"
    assert m.model_ready("learnd", "7").kind == "not_found"
    empty = model(SnapshotRef())
    assert empty.infer("learnd", None, [matrix(np.ones((1, 3), np.float32))]).kind == "unavailable"
    assert empty.ready() is False and empty.model_ready("learnd", None) is False


def test_http_decoding_reads_json_and_the_binary_extension_alike():
    from learnd.adapters.serving.oip_http import decode_request, encode_response

    X = RNG.uniform(size=(2, 3)).astype(np.float32)
    spec = {"name": "input", "datatype": "FP32", "shape": [2, 3]}
    as_json = orjson.dumps({"inputs": [{**spec, "data": X.tolist()}]})
    head = orjson.dumps(
        {
            "inputs": [{**spec, "parameters": {"binary_data_size": 24}}],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    )
    for body, length in ((as_json, None), (head + X.tobytes(), str(len(head)).encode())):
        _, inputs, requested, _ = decode_request(body, length)
        np.testing.assert_array_equal(inputs[0].data.reshape(2, 3), X)
    assert requested == [("scores", True)]
    assert decode_request(head + X.tobytes()[:20], str(len(head)).encode()).kind == "invalid"
    assert decode_request(head + X.tobytes() + b"x", str(len(head)).encode()).kind == "invalid"
    out = model(make_ref()).infer("learnd", None, inputs, ["scores"])
    status, body, headers = encode_response(out, "r1", False, {"scores": True})
    n = int(dict(headers)[b"inference-header-content-length"])
    answer = orjson.loads(body[:n])
    assert status == 200 and answer["id"] == "r1" and answer["model_version"] == "2"
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<f4").reshape(2, 3), out.outputs[0].data)


def test_the_grpc_descriptor_is_the_vendored_proto_compiled(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra)")
    from google.protobuf import descriptor_pb2

    proto = Path(__file__).parents[2] / "adapters" / "serving" / "proto"
    out = tmp_path / "fresh.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--descriptor_set_out={out}"]
        + ["open_inference_grpc.proto"],
        check=True,
    )
    parse = descriptor_pb2.FileDescriptorSet.FromString
    committed = parse((proto / "open_inference_grpc.desc").read_bytes())
    assert parse(out.read_bytes()) == committed
    assert committed.file[0].service[0].name == "GRPCInferenceService"
    assert "Apache License" in (proto / "open_inference_grpc.proto").read_text()


def base(**serving):
    return {"schema": {"task": "binary", "n_features": 3}, "serving": serving}


@pytest.mark.parametrize("key", ["oip_http_port", "oip_grpc_port"])
def test_oip_ports_are_off_by_default_and_a_non_loopback_bind_needs_the_token(key):
    assert ServingConfig().oip_http_port is None and ServingConfig().oip_grpc_port is None
    with pytest.raises(ValidationError, match="serving.token"):
        LearndConfig.model_validate(
            base(tcp_port=None, unix_path="/tmp/x", tcp_host="0.0.0.0", **{key: 8000})
        )
    ok = base(tcp_port=None, unix_path="/tmp/x", tcp_host="0.0.0.0", token="t", **{key: 8000})
    assert getattr(LearndConfig.model_validate(ok).serving, key) == 8000
    with pytest.raises(ValidationError, match="serving.processes >= 1"):
        LearndConfig.model_validate(base(processes=0, **{key: 8000}))
    with pytest.raises(ValidationError, match="model_name"):
        LearndConfig.model_validate(base(model_name="a/b"))
