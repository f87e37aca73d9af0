"""Typed features over the Open Inference Protocol, sent the ways Triton's own clients send them:
strings as ``BYTES`` tensors in the binary form over HTTP, and over gRPC both as raw contents
and as ``bytes_contents``. Each answer equals the NDJSON socket's for the same event and version.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="the test extra's tritonclient[http]")

import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

from learnd.adapters.serving.client import LearndClient  # noqa: E402
from learnd.daemon.config import LearndConfig  # noqa: E402
from tests.integration.conftest import daemon_on_list, wait_for  # noqa: E402

FEATURES = {"amount": "number", "is_new": "boolean", "country": "category"}
COUNTRIES = ["DE", "FR", "US", "JP"]
ASKED = [(0.5, True, "FR"), (-1.0, False, "JP"), (2.0, False, "Ünited")]  # JP, Ü...: unseen


def events(n, seed=5):
    rng = np.random.default_rng(seed)
    for i in range(n):
        country = COUNTRIES[int(rng.integers(3))]
        amount = float(rng.normal())
        yield {
            "features": {"amount": amount, "is_new": bool(i % 2), "country": country},
            "label": int(amount > 0 or country == "FR"),
        }


@pytest.fixture
def daemon(tmp_path):
    cfg = LearndConfig.model_validate(
        {
            "schema": {"task": "binary", "features": FEATURES},
            "model": {"hidden": [8]},
            "checkpoint": {"dir": str(tmp_path / "ckpt")},
            "metrics": {"port": 0},
            "serving": {"tcp_port": 0, "processes": 1, "oip_http_port": 0, "oip_grpc_port": 0},
            "learning": {"publish_every_s": 0.05, "gate": {"window": 300}},
        }
    )
    with daemon_on_list(cfg, events(6000)) as d:
        yield d


def columns():
    amount = np.array([a for a, _, _ in ASKED], np.float32)
    is_new = np.array([n for _, n, _ in ASKED], bool)
    country = np.array([c.encode() for _, _, c in ASKED], dtype=object)
    return amount, is_new, country


def triton_inputs(client_module, fill):
    """The three columns as one Triton client's InferInputs, filled by ``fill(input, data)``."""
    inputs = []
    for (name, dt), data in zip(
        (("amount", "FP32"), ("is_new", "BOOL"), ("country", "BYTES")), columns(), strict=True
    ):
        t = client_module.InferInput(name, [len(ASKED)], dt)
        fill(t, data)
        inputs.append(t)
    return inputs


def test_typed_inputs_from_triton_clients_answer_as_the_socket_does(daemon):
    wait_for(lambda: daemon.pipeline.learner.events_learned >= 6000, 60, what="learned")
    with LearndClient.tcp(*daemon.server.tcp_address) as c:
        wait_for(lambda: (c.health().get("version") or 0) >= 2, 30, what="a trained model")
        # pin the newest kept version: the socket and the OIP answers come from that one
        kept = c.request({"op": "versions"})["versions"]
        version = c.request({"op": "rollback", "version": kept[-1]["version"]})["version"]
        wait_for(lambda: c.health()["version"] == version, 10, what="the pinned version")
        socket = [
            c.predict({"amount": a, "is_new": n, "country": k})["scores"] for a, n, k in ASKED
        ]
    expected = np.array([[s["0"], s["1"]] for s in socket], np.float32)
    amount, is_new, country = columns()

    host, port = daemon.server.oip.http_address
    h = thttp.InferenceServerClient(f"{host}:{port}")
    # BYTES in the binary form
    inputs = triton_inputs(thttp, lambda t, data: t.set_data_from_numpy(data, binary_data=True))
    got = h.infer("learnd", inputs, model_version=str(version))
    assert got.get_response()["model_version"] == str(version)
    np.testing.assert_allclose(got.as_numpy("scores"), expected, atol=1e-6)  # socket: 6 places

    host, port = daemon.server.oip.grpc_address
    g = tgrpc.InferenceServerClient(f"{host}:{port}")
    inputs = triton_inputs(tgrpc, lambda t, data: t.set_data_from_numpy(data))  # raw contents
    got = g.infer("learnd", inputs, model_version=str(version))
    assert got.get_response().model_version == str(version)
    np.testing.assert_allclose(got.as_numpy("scores"), expected, atol=1e-6)

    # bytes_contents, as clients that fill the typed contents send them
    stub_request = service_pb2.ModelInferRequest(model_name="learnd", model_version=str(version))
    for name, values, dt, field in (
        ("amount", amount.tolist(), "FP32", "fp32_contents"),
        ("is_new", is_new.tolist(), "BOOL", "bool_contents"),
        ("country", list(country), "BYTES", "bytes_contents"),
    ):
        t = stub_request.inputs.add(name=name, datatype=dt, shape=[len(ASKED)])
        getattr(t.contents, field).extend(values)
    answer = g._client_stub.ModelInfer(stub_request)
    scores = np.frombuffer(answer.raw_output_contents[1], "<f4").reshape(len(ASKED), 2)
    assert [o.name for o in answer.outputs] == ["prediction", "scores"]
    np.testing.assert_allclose(scores, expected, atol=1e-6)  # the socket rounds to 6 places


def test_malformed_binary_bytes_get_protocol_errors(daemon):
    import http.client
    import json

    host, port = daemon.server.oip.http_address
    wait_for(lambda: daemon.pipeline.learner.events_learned >= 1000, 60, what="learned")
    head = json.dumps(
        {
            "inputs": [
                {"name": "amount", "datatype": "FP32", "shape": [1], "data": [0.5]},
                {
                    "name": "country",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 6},
                },
            ]
        }
    ).encode()
    for blob, why in (
        (b"\x09\x00\x00\x00FR", "runs past the end"),
        (b"\x02\x00\x00\x00\xff\xfe", "not UTF-8"),
    ):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request(
            "POST",
            "/v2/models/learnd/infer",
            body=head + blob,
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 400 and "'country'" in body["error"] and why in body["error"], body
    # and the server keeps answering
    body = json.dumps(
        {
            "inputs": [
                {"name": "country", "datatype": "BYTES", "shape": [1], "data": ["FR"]},
                {"name": "amount", "datatype": "FP32", "shape": [1], "data": [0.5]},
                {"name": "is_new", "datatype": "BOOL", "shape": [1], "data": [True]},
            ]
        }
    )
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", "/v2/models/learnd/infer", body=body)
    assert conn.getresponse().status == 200
    conn.close()
