"""`learnd run` with the Open Inference Protocol on, asked by Triton's clients beside the NDJSON
socket: the same answers from the same version (`learnd export` against a running daemon:
tests/integration/test_oip.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from learnd.adapters.kafka.broker import EmbeddedBroker, free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.adapters.settings import build_config
from learnd.daemon.events.synthetic import DriftingSEA

pytestmark = pytest.mark.e2e
thttp = pytest.importorskip("tritonclient.http", reason="the test extra's tritonclient[http]")
tgrpc = pytest.importorskip("tritonclient.grpc", reason="the test extra's tritonclient[grpc]")

LEARND = shutil.which("learnd", path=str(Path(sys.executable).parent)) or "learnd"
X = np.array([[9, 9, 0], [0.1, 0.1, 0], [5, 4, 1], [2, 7, 3]], np.float32)


def predict_ndjson(port):
    with LearndClient.tcp("127.0.0.1", port) as c:
        return [c.request({"op": "predict", "features": row}) for row in X.tolist()]


def test_learnd_run_answers_oip_clients_and_exports_what_it_serves(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    port, http_port, grpc_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "LEARND_CONFIG": "",
        "LEARND_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "LEARND_KAFKA__TOPIC": "oip-e2e",
        "LEARND_KAFKA__DEAD_LETTER_TOPIC": "oip-e2e-dlq",
        "LEARND_KAFKA__GROUP_ID": "oip-e2e",
        "LEARND_SCHEMA__FEATURES": '["x1", "x2", "x3"]',
        "LEARND_CHECKPOINT__DIR": str(tmp_path / "state"),
        "LEARND_SERVING__TCP_PORT": str(port),
        "LEARND_SERVING__OIP_HTTP_PORT": str(http_port),
        "LEARND_SERVING__OIP_GRPC_PORT": str(grpc_port),
        "LEARND_METRICS__ENABLED": "false",
        "LEARND_LOG__FORMAT": "json",
    }
    cfg = build_config(environ={k: v for k, v in env.items() if k.startswith("LEARND_")})
    ensure_topics(cfg.kafka, partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for i, event in enumerate(DriftingSEA(seed=5).take(3000)):
        producer.send("oip-e2e", orjson.dumps(event), partition=i % 2)
    producer.flush(30)
    producer.close()
    proc = subprocess.Popen([LEARND, "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        h = thttp.InferenceServerClient(f"127.0.0.1:{http_port}")
        g = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        for _ in range(600):  # the start-up: the first model, then every OIP route ready
            try:
                if h.is_model_ready("learnd") and g.is_model_ready("learnd"):
                    break
            except (OSError, tgrpc.InferenceServerException):
                pass
            time.sleep(0.1)
        assert h.is_server_live() and g.is_server_live()
        for _ in range(20):  # the learner may publish meanwhile: compare within one version
            ref = predict_ndjson(port)
            tensor = thttp.InferInput("input", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X)
            by_http = h.infer("learnd", [tensor])
            gtensor = tgrpc.InferInput("input", list(X.shape), "FP32")
            gtensor.set_data_from_numpy(X)
            by_grpc = g.infer("learnd", [gtensor])
            versions = {a["version"] for a in predict_ndjson(port)} | {a["version"] for a in ref}
            versions |= {int(by_http.get_response()["model_version"])}
            versions |= {int(by_grpc.get_response().model_version)}
            if len(versions) == 1:
                break
        assert len(versions) == 1, versions
        want = [a["prediction"] for a in ref]
        assert by_http.as_numpy("prediction").tolist() == want
        assert by_grpc.as_numpy("prediction").tolist() == want
        scores = np.array([[a["scores"]["0"], a["scores"]["1"]] for a in ref])
        np.testing.assert_allclose(by_grpc.as_numpy("scores"), scores, atol=6e-7)

    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        broker.stop()
    assert proc.returncode == 0, err[-2000:]
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    start = next(rec for rec in logs if rec.get("event") == "start")
    assert start["oip_http"] == ["127.0.0.1", http_port]
    assert start["oip_grpc"] == ["127.0.0.1", grpc_port]
