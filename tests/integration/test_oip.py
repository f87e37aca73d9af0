"""The Open Inference Protocol (HTTP and gRPC) from the serving processes, through clients that
learnd did not write: Triton's (HTTP and gRPC) and KServe's REST client. Each answer equals the
NDJSON socket's for the same input and version; malformed requests get protocol errors and the
servers keep answering."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="the test extra's tritonclient[http]")

import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from learnd.adapters.cli.main import main  # noqa: E402
from learnd.adapters.serving.client import LearndClient  # noqa: E402
from learnd.daemon.events.synthetic import FEATURES, DriftingSEA  # noqa: E402
from tests.conftest import sea_config  # noqa: E402
from tests.integration.conftest import daemon_on_list, wait_for  # noqa: E402

TOKEN = "oip-test-token"
# gRPC metadata keys are lower case; Triton's HTTP client adds to the dict it is given: pass copies
AUTH = {"authorization": f"Bearer {TOKEN}"}
X = np.random.default_rng(3).uniform(0, 10, (16, 3)).astype(np.float32)
MAX_BODY = 64 * 1024


@pytest.fixture
def daemon(tmp_path):
    cfg = sea_config(
        tmp_path,
        serving={
            "processes": 2,
            "token": TOKEN,
            "oip_http_port": 0,
            "oip_grpc_port": 0,
            "max_request_bytes": MAX_BODY,
        },
        learning={"publish_every_s": 0.05, "gate": {"window": 300}},
    )
    with daemon_on_list(cfg, DriftingSEA(seed=8).take(30_000)) as d:
        yield d


def ndjson(d, req):
    with LearndClient.tcp(*d.server.tcp_address, token=TOKEN) as c:
        return c.request(req, check=False)


def triton_http_infer(c, x, version="", binary=True, names=False):
    if names:
        inputs = []
        for j, name in enumerate(FEATURES):
            col = thttp.InferInput(name, [len(x)], "FP32")
            col.set_data_from_numpy(np.ascontiguousarray(x[:, j]), binary_data=binary)
            inputs.append(col)
    else:
        inputs = [thttp.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
    return c.infer("learnd", inputs, model_version=version, headers=dict(AUTH))


def triton_grpc_infer(c, x, version=""):
    tensor = tgrpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return c.infer("learnd", [tensor], model_version=version, headers=dict(AUTH))


KSERVE = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
url, token, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
async def main():
    c = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    h = {"Authorization": "Bearer " + token}
    live = await c.is_server_live(url, headers=h)
    ready = await c.is_model_ready(url, "learnd", headers=h)
    x = InferInput("input", [len(rows), len(rows[0])], "FP32", data=[v for r in rows for v in r])
    res = await c.infer(url, InferRequest("learnd", infer_inputs=[x]), model_name="learnd", headers=h)
    out = {o.name: o.as_numpy().tolist() for o in res.outputs}
    await c.close()
    print(json.dumps({"live": live, "ready": ready, **out}))
asyncio.run(main())
"""


def test_triton_and_kserve_clients_get_the_ndjson_answers(daemon, tmp_path):
    http_host, http_port = daemon.server.oip.http_address
    grpc_host, grpc_port = daemon.server.oip.grpc_address
    wait_for(lambda: (ndjson(daemon, {"op": "health"}).get("version") or 0) >= 3, 60, what="v3")
    h = thttp.InferenceServerClient(f"{http_host}:{http_port}")
    g = tgrpc.InferenceServerClient(f"{grpc_host}:{grpc_port}")
    assert h.is_server_live(headers=dict(AUTH)) and g.is_server_live(headers=dict(AUTH))
    # readiness reaches the serving processes with the health they mirror (every 0.2 s): a
    # loaded machine can answer a version before the first mirrored health says ready
    wait_for(
        lambda: h.is_server_ready(headers=dict(AUTH)) and g.is_server_ready(headers=dict(AUTH)),
        30,
        what="ready over both protocols",
    )
    assert h.is_model_ready("learnd", headers=dict(AUTH)) and g.is_model_ready(
        "learnd", headers=dict(AUTH)
    )

    # while the learner publishes (every 50 ms): no request fails, each answer is the one of the
    # version it names, and versions never go backwards on one connection
    served = {}
    daemon.pipeline.ref.subscribe(lambda snap: served.setdefault(snap.version, snap))
    answers = [triton_http_infer(h, X) for _ in range(150)]
    answers += [triton_grpc_infer(g, X) for _ in range(150)]
    seen = []
    for r in answers:
        response = r.get_response()
        v = int(response["model_version"] if isinstance(response, dict) else response.model_version)
        seen.append(v)
        np.testing.assert_allclose(r.as_numpy("scores"), served[v].predict_many(X), atol=1e-6)
    assert seen[:150] == sorted(seen[:150]) and seen[150:] == sorted(seen[150:])

    # pin one version (rollback), then every client must give the NDJSON socket's answers
    kept = ndjson(daemon, {"op": "versions"})["versions"]
    pinned = ndjson(daemon, {"op": "rollback", "version": kept[-1]["version"]})
    assert pinned["ok"], pinned
    version = pinned["version"]
    wait_for(lambda: ndjson(daemon, {"op": "health"})["version"] == version, 10, what="pinned")
    ref = ndjson(daemon, {"op": "predict_many", "instances": X.tolist()})
    assert ref["version"] == version
    want_pred = [p["prediction"] for p in ref["predictions"]]
    want_scores = np.array([[p["scores"]["0"], p["scores"]["1"]] for p in ref["predictions"]])

    def check(pred, scores, got_version):
        assert str(got_version) == str(version)
        assert np.asarray(pred).tolist() == want_pred
        np.testing.assert_allclose(np.asarray(scores), want_scores, atol=6e-7)

    meta = h.get_model_metadata("learnd", headers=dict(AUTH))
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert str(version) in meta["versions"]
    assert g.get_model_metadata("learnd", headers=dict(AUTH)).outputs[1].name == "scores"
    for binary in (True, False):
        for names in (False, True):
            r = triton_http_infer(h, X, binary=binary, names=names)
            check(r.as_numpy("prediction"), r.as_numpy("scores"), r.get_response()["model_version"])
    r = triton_grpc_infer(g, X)
    check(r.as_numpy("prediction"), r.as_numpy("scores"), r.get_response().model_version)
    # `learnd export` of that version, run in onnxruntime, gives the served numbers
    ort = pytest.importorskip("onnxruntime")
    host, port = daemon.server.tcp_address
    onnx_path = str(tmp_path / "served.onnx")
    args = ["export", "--tcp", f"{host}:{port}", "--token", TOKEN, "--version", str(version)]
    assert main([*args, "-o", onnx_path]) == 0
    (scores,) = ort.InferenceSession(onnx_path).run(None, {"input": X})
    np.testing.assert_allclose(scores, want_scores, atol=1e-5, rtol=0)
    assert scores.argmax(axis=1).tolist() == want_pred

    # the versioned routes answer from that version even after others are published
    ndjson(daemon, {"op": "unpin"})
    r = triton_http_infer(h, X, version=str(version))
    check(r.as_numpy("prediction"), r.as_numpy("scores"), r.get_response()["model_version"])
    r = triton_grpc_infer(g, X, version=str(version))
    check(r.as_numpy("prediction"), r.as_numpy("scores"), r.get_response().model_version)

    # KServe's SDK registers the same protocol's messages as Triton's client: its own process
    ndjson(daemon, {"op": "rollback", "version": version})
    ref = ndjson(daemon, {"op": "predict_many", "instances": X.tolist()})
    want_pred = [p["prediction"] for p in ref["predictions"]]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            KSERVE,
            f"http://{http_host}:{http_port}",
            TOKEN,
            json.dumps(X.tolist()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["live"] and got["ready"]
    assert got["prediction"] == want_pred
    np.testing.assert_allclose(
        got["scores"], [[p["scores"]["0"], p["scores"]["1"]] for p in ref["predictions"]], atol=6e-7
    )


def raw_http(host, port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers={**AUTH, **(headers or {})})
    resp = conn.getresponse()
    status, data = resp.status, resp.read()
    conn.close()
    return status, json.loads(data) if data else None


def test_malformed_requests_get_protocol_errors_and_the_servers_keep_answering(daemon):
    host, port = daemon.server.oip.http_address
    wait_for(lambda: ndjson(daemon, {"op": "health"}).get("version"), 60, what="a model")
    good = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    cases = [
        (
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]},
            400,
        ),
        (
            {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1] * 3}]},
            400,
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "INT64", "data": [1] * 3}]},
            400,
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a"] * 3}
                ]
            },
            400,
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": ["a"] * 3}]},
            400,
        ),
        ({"inputs": [{"name": "x1", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400),
        ({"inputs": "nope"}, 400),
        ({**good, "outputs": [{"name": "nope"}]}, 400),
    ]
    for body, status in cases:
        got = raw_http(host, port, "POST", "/v2/models/learnd/infer", json.dumps(body).encode())
        assert got[0] == status and isinstance(got[1]["error"], str), (body, got)
    assert raw_http(host, port, "POST", "/v2/models/learnd/infer", b"{not json")[0] == 400
    assert (
        raw_http(host, port, "POST", "/v2/models/other/infer", json.dumps(good).encode())[0] == 404
    )
    path = "/v2/models/learnd/versions/99999/infer"
    assert raw_http(host, port, "POST", path, json.dumps(good).encode())[0] == 404
    assert raw_http(host, port, "GET", "/v2/models/learnd/infer")[0] == 405
    assert raw_http(host, port, "GET", "/v3")[0] == 404
    # a body over the cap is refused from its Content-Length: the answer comes before it is sent
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(
            b"POST /v2/models/learnd/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            + TOKEN.encode()
            + b"\r\ncontent-length: %d\r\n\r\n{" % (100 * MAX_BODY)
        )
        head = b""
        while chunk := s.recv(65536):  # the answer closes the connection; it may come in parts
            head += chunk
    assert head.startswith(b"HTTP/1.1 413 ") and b"at most" in head, head
    status, body = raw_http(host, port, "GET", "/v2/health/live", headers={"authorization": "x"})
    assert status == 401 and "token" in body["error"]

    g = tgrpc.InferenceServerClient("{}:{}".format(*daemon.server.oip.grpc_address))
    bad = tgrpc.InferInput("input", [1, 4], "FP32")
    bad.set_data_from_numpy(np.ones((1, 4), np.float32))
    wrong_type = tgrpc.InferInput("input", [1, 3], "INT64")
    wrong_type.set_data_from_numpy(np.ones((1, 3), np.int64))
    huge_in = tgrpc.InferInput("input", [MAX_BODY, 3], "FP32")
    huge_in.set_data_from_numpy(np.ones((MAX_BODY, 3), np.float32))
    for model, version, tensor, code in [
        ("learnd", "", bad, "StatusCode.INVALID_ARGUMENT"),
        ("learnd", "", wrong_type, "StatusCode.INVALID_ARGUMENT"),
        ("other", "", bad, "StatusCode.NOT_FOUND"),
        ("learnd", "99999", bad, "StatusCode.NOT_FOUND"),
        ("learnd", "", huge_in, "StatusCode.RESOURCE_EXHAUSTED"),
    ]:
        with pytest.raises(InferenceServerException) as err:
            g.infer(model, [tensor], model_version=version, headers=dict(AUTH))
        assert err.value.status() == code, err.value
    with pytest.raises(InferenceServerException) as err:
        g.is_server_live()
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"

    # each answer is counted where the daemon's /metrics shows it, by protocol and code
    def counts():
        fam = {f.name: f for f in daemon.registry.collect()}.get("learnd_oip_requests")
        samples = fam.samples if fam else []
        return {
            (x.labels["protocol"], x.labels["endpoint"], x.labels["code"]): x.value
            for x in samples
            if x.name.endswith("_total")
        }

    def counted():
        c = counts()
        return (
            c.get(("http", "infer", "400"), 0) >= 9
            and c.get(("http", "infer", "413"), 0) == 1
            and c.get(("grpc", "infer", "INVALID_ARGUMENT"), 0) == 2
            and c.get(("grpc", "live", "UNAUTHENTICATED"), 0) == 1
        )

    wait_for(counted, 15, what=f"OIP request metrics summed (have {counts()})")

    # and both keep answering
    assert (
        raw_http(host, port, "POST", "/v2/models/learnd/infer", json.dumps(good).encode())[0] == 200
    )
    assert triton_grpc_infer(g, X[:2]).as_numpy("prediction").shape == (2,)
