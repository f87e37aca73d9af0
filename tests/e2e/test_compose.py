"""Where a Docker engine exists: the compose stack comes up, answers a prediction, is scraped.

Run with Docker Compose v2 (`docker compose`, as the README says), wired in by
tests/support/compose.py where only its binary is installed. Skipped (with the reason) on
machines without a Docker engine, such as this project's CI; the compose file itself is checked
with the same v2 there (tests/unit/test_deploy.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from learnd.adapters.serving.client import LearndClient
from tests.support.compose import compose as compose_v2

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _engine_problem():
    cli = shutil.which("docker")
    if cli is None:
        return "no docker CLI"
    r = subprocess.run([cli, "info"], capture_output=True, text=True)
    if r.returncode != 0:
        return "no Docker engine reachable: " + (r.stderr.strip().splitlines() or ["?"])[-1][:150]
    return None


COMPOSE = compose_v2()
PROBLEM = _engine_problem() or (COMPOSE if isinstance(COMPOSE, str) else None)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PROBLEM is not None, reason=f"compose stack: {PROBLEM}"),
]


def test_compose_stack_predicts_and_is_scraped():
    subprocess.run(["sh", "init-secrets.sh"], cwd=DOCKER, check=True)
    env_file = dict(line.split("=", 1) for line in (DOCKER / ".env").read_text().splitlines())
    cmd, extra = COMPOSE
    compose = [*cmd, "-f", "compose.yml"]
    env = {**os.environ, **extra}
    subprocess.run(
        [*compose, "up", "-d", "--build", "--wait", "learnd", "prometheus"],
        cwd=DOCKER,
        check=True,
        timeout=1800,
        env=env,
    )
    subprocess.run([*compose, "up", "-d", "producer"], cwd=DOCKER, check=True, timeout=300, env=env)
    try:
        deadline = time.monotonic() + 180
        answer = None
        while time.monotonic() < deadline:
            try:
                with LearndClient.tcp(
                    "127.0.0.1", 7070, token=env_file["LEARND_SERVING_TOKEN"]
                ) as c:
                    answer = c.predict({"x1": 9, "x2": 9, "x3": 0})
                if answer["version"] >= 3:
                    break
            except OSError:
                pass  # not listening yet
            time.sleep(2)
        assert answer and answer["ok"] and answer["version"] >= 3
        url = "http://127.0.0.1:9090/api/v1/query?query=learnd_events_total"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
            if result:
                break
            time.sleep(2)
        assert result, "prometheus never scraped learnd"
        metrics = urllib.request.Request(  # published on the host, behind its token
            "http://127.0.0.1:9464/metrics",
            headers={"Authorization": f"Bearer {env_file['LEARND_METRICS_TOKEN']}"},
        )
        assert b"learnd_events_total" in urllib.request.urlopen(metrics, timeout=5).read()
    finally:
        subprocess.run([*compose, "down", "-v"], cwd=DOCKER, timeout=300, env=env)
