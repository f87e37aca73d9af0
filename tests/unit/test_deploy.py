"""The deployment files: Dockerfile lint, compose validation, Prometheus config and alert tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.compose import compose

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def tool(name):
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (scripts/test.sh installs it where it can)")
    return found


def test_dockerfile_passes_hadolint():
    r = subprocess.run(
        [tool("hadolint"), str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_image_installs_with_the_readme_steps_and_runs_as_non_root():
    text = (DOCKER / "Dockerfile").read_text()
    assert "RUN bash scripts/_venv.sh" in text, "the image must install the way the README does"
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text and '"learnd", "health"' in text
    assert (ROOT / "scripts" / "_venv.sh").read_text().count("pip install") >= 2


def compose_v2():
    found = compose()
    if isinstance(found, str):
        pytest.skip(found)
    return found


def test_compose_file_is_valid(tmp_path):
    cmd, extra = compose_v2()
    env = {
        **os.environ,
        **extra,
        "LEARND_SERVING_TOKEN": "a",
        "LEARND_METRICS_TOKEN": "b",
        "GRAFANA_ADMIN_PASSWORD": "c",
    }
    r = subprocess.run(
        [*cmd, "-f", str(DOCKER / "compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    for service in ("kafka", "topics", "learnd", "producer", "prometheus", "grafana"):
        assert f"  {service}:" in r.stdout
    assert "apache/kafka" in r.stdout and "KAFKA_PROCESS_ROLES: broker,controller" in r.stdout


def test_compose_refuses_to_start_without_tokens():
    cmd, extra = compose_v2()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LEARND_SERVING_TOKEN", "LEARND_METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD")
    } | extra
    r = subprocess.run(
        [*cmd, "-f", str(DOCKER / "compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode != 0 and "init-secrets.sh" in r.stderr


def test_prometheus_config_checks(tmp_path):
    for f in ("prometheus.yml", "alerts.yml"):
        shutil.copy(DOCKER / "prometheus" / f, tmp_path / f)
    (tmp_path / "metrics-token").write_text("x")
    r = subprocess.run(
        [tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_promtool_unit_test_and_they_pass():
    import yaml

    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    tests = yaml.safe_load((DOCKER / "prometheus" / "alerts_test.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    firing = {
        c["alertname"] for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"]
    }
    assert names == firing, f"alerts without a firing test: {names - firing}"
    r = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts_test.yml"],
        cwd=DOCKER / "prometheus",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_is_well_formed():
    dash = json.loads((ROOT / "grafana" / "dashboards" / "learnd.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "learnd-overview"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for wanted in (
        "ingest",
        "lag",
        "accuracy",
        "learning rate",
        "version",
        "publish",
        "size",
        "sparsity",
        "latency",
        "dead letters",
        "checkpoint",
        "ready",
        "mae and rmse",
        "by op",
    ):
        assert wanted in titles, wanted
    assert dash["annotations"]["list"][0]["expr"].startswith(
        "sum by (instance) (increase(learnd_drift"
    )


def test_dashboard_queries_the_datasource_chosen_in_its_variable():
    """No hard-coded datasource uid: an imported dashboard works with any Prometheus."""
    dash = json.loads((ROOT / "grafana" / "dashboards" / "learnd.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    users = [*dash["panels"], *dash["annotations"]["list"], variables["instance"]]
    users += [t for p in dash["panels"] for t in p.get("targets", [])]
    for user in users:
        if "datasource" in user or "expr" in user:
            assert user["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, user


def test_image_healthcheck_follows_the_configured_address():
    """`learnd health` with no address reads the daemon's config (LEARND_CONFIG,
    LEARND_SERVING__*): a fixed --tcp would probe the default port whatever is configured."""
    text = (DOCKER / "Dockerfile").read_text()
    check = text[text.index("HEALTHCHECK") :].split("CMD", 1)[1].splitlines()[0]
    assert check.strip() == '["learnd", "health"]'


def _secrets_dir(tmp_path):
    work = tmp_path / "docker"
    (work / "prometheus").mkdir(parents=True)
    shutil.copy(DOCKER / "init-secrets.sh", work / "init-secrets.sh")
    return work


def _env_file(work):
    return dict(line.split("=", 1) for line in (work / ".env").read_text().splitlines())


def test_init_secrets_writes_the_tokens_and_prometheus_copy(tmp_path):
    work = _secrets_dir(tmp_path)
    subprocess.run(["sh", str(work / "init-secrets.sh")], check=True, capture_output=True)
    env = _env_file(work)
    assert {"LEARND_SERVING_TOKEN", "LEARND_METRICS_TOKEN", "GRAFANA_ADMIN_PASSWORD"} <= set(env)
    assert all(len(env[k]) == 32 for k in env if k != "COMPOSE_PROJECT_NAME")
    assert (work / "prometheus" / "metrics-token").read_text() == env["LEARND_METRICS_TOKEN"]
    assert (work / ".env").stat().st_mode & 0o077 == 0


def test_init_secrets_repairs_a_missing_token_file_and_token_when_env_exists(tmp_path):
    work = _secrets_dir(tmp_path)
    subprocess.run(["sh", str(work / "init-secrets.sh")], check=True, capture_output=True)
    before = _env_file(work)
    (work / "prometheus" / "metrics-token").unlink()
    text = (
        (work / ".env")
        .read_text()
        .replace(
            f"GRAFANA_ADMIN_PASSWORD={before['GRAFANA_ADMIN_PASSWORD']}", "GRAFANA_ADMIN_PASSWORD="
        )
    )
    (work / ".env").write_text(text)
    subprocess.run(["sh", str(work / "init-secrets.sh")], check=True, capture_output=True)
    after = _env_file(work)
    assert after["LEARND_SERVING_TOKEN"] == before["LEARND_SERVING_TOKEN"], "kept"
    assert after["LEARND_METRICS_TOKEN"] == before["LEARND_METRICS_TOKEN"], "kept"
    assert len(after["GRAFANA_ADMIN_PASSWORD"]) == 32, "an empty one is replaced"
    assert (work / "prometheus" / "metrics-token").read_text() == before["LEARND_METRICS_TOKEN"]


def test_compose_publishes_the_metrics_port_on_loopback():
    import yaml

    compose_file = yaml.safe_load((DOCKER / "compose.yml").read_text())
    assert "127.0.0.1:9464:9464" in compose_file["services"]["learnd"]["ports"]


def test_dockerignore_keeps_secrets_and_state_out_of_the_build_context():
    patterns = (ROOT / ".dockerignore").read_text().split()
    for wanted in (
        "**/.env",
        "docker/prometheus/metrics-token",
        "**/learnd-state",
        "**/learnd-demo-*",
    ):
        assert wanted in patterns, wanted
