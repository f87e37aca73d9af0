"""Open Inference Protocol inputs for typed features answer as the socket's predict does."""

from __future__ import annotations

import numpy as np

from learnd.daemon.config import LearningConfig, ModelConfig, SchemaConfig
from learnd.daemon.learning.learner import Learner
from learnd.daemon.serving.oip import OipError, OipModel, Tensor
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import Draft, SnapshotRef

FEATURES = {
    "amount": "number",
    "n_prev": {"type": "number", "missing": "impute"},
    "is_new": "boolean",
    "country": "category",
}


def served():
    schema = SchemaConfig(task="binary", features=FEATURES)
    lrn = Learner(schema, ModelConfig(hidden=(8,)), LearningConfig(), "cpu")
    handler = RequestHandler(SnapshotRef(), schema)
    rng = np.random.default_rng(0)
    for _ in range(20):
        events = [
            {
                "amount": float(rng.normal()),
                "n_prev": float(rng.integers(5)),
                "is_new": bool(rng.random() < 0.5),
                "country": ["DE", "FR", "US"][int(rng.integers(3))],
            }
            for _ in range(32)
        ]
        X = np.asarray([handler.parser.parse(e)[0] for e in events], np.float32)
        lrn.learn_many(X, (X[:, 0] > 0).astype(np.float32))
    ref = SnapshotRef()
    ref.publish(Draft("binary", (0, 1), schema.feature_names, lrn.export(), 0, {}))
    return schema, ref


def test_typed_inputs_answer_as_the_socket_does():
    schema, ref = served()
    model = OipModel(ref, schema, "learnd")
    socket = RequestHandler(ref, schema)
    inputs = [
        Tensor("amount", "FP32", (2,), np.array([0.5, -1.0], np.float32)),
        Tensor("is_new", "BOOL", (2, 1), np.array([True, False])),
        Tensor("country", "BYTES", (2,), np.array(["FR", "JP"], object)),
    ]  # n_prev left out: missing, imputed
    out = model.infer("learnd", None, inputs)
    assert not isinstance(out, OipError), out
    scores = dict((t.name, t.data) for t in out.outputs)["scores"]
    for i, (amount, new, country) in enumerate([(0.5, True, "FR"), (-1.0, False, "JP")]):
        answer = socket.handle(
            {"op": "predict", "features": {"amount": amount, "is_new": new, "country": country}}
        )
        assert answer["ok"], answer
        expected = [answer["scores"][str(c)] for c in (0, 1)]  # by class
        np.testing.assert_allclose(scores[i], expected, rtol=1e-6)


def test_a_wrong_typed_input_is_invalid_and_names_the_feature():
    schema, ref = served()
    model = OipModel(ref, schema, "learnd")
    bad = [
        Tensor("amount", "BYTES", (1,), np.array(["lots"], object)),
        Tensor("is_new", "BOOL", (1,), np.array([True])),
    ]
    out = model.infer("learnd", None, bad)
    assert isinstance(out, OipError) and out.kind == "invalid" and "amount" in out.message
    other = model.infer("learnd", None, [Tensor("nope", "FP32", (1,), np.zeros(1))])
    assert isinstance(other, OipError) and other.message.startswith("inputs ['nope']")


def test_http_json_bytes_inputs_reach_the_model_as_strings():
    import orjson

    from learnd.adapters.serving.oip_http import decode_request

    schema, ref = served()
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "amount", "datatype": "FP32", "shape": [1], "data": [0.5]},
                {"name": "is_new", "datatype": "BOOL", "shape": [1], "data": [True]},
                {"name": "country", "datatype": "BYTES", "shape": [1], "data": ["FR"]},
            ]
        }
    )
    decoded = decode_request(body, None)
    assert not isinstance(decoded, OipError), decoded
    out = OipModel(ref, schema, "learnd").infer("learnd", None, decoded[1])
    assert not isinstance(out, OipError), out
    bad = orjson.dumps(
        {"inputs": [{"name": "country", "datatype": "BYTES", "shape": [1], "data": [5]}]}
    )
    err = decode_request(bad, None)
    assert isinstance(err, OipError) and "strings" in err.message
