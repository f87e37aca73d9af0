"""A real Prometheus scrapes a running learnd; the dashboard's and alerts' PromQL runs against it.

Every dashboard query (and its drift annotation) must return data. Every alert expression must be
valid, and every learnd metric it names must exist: alerts are *meant* to be empty on a healthy
daemon, so whether they fire is proven by ``promtool test rules`` in ``tests/unit/test_deploy.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from kafka import KafkaProducer

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.kafka.broker import free_port
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from learnd.daemon.config import LearndConfig
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config

from .conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "grafana" / "dashboards" / "learnd.json").read_text())
ALERTS = yaml.safe_load((ROOT / "docker" / "prometheus" / "alerts.yml").read_text())
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None, reason="no prometheus binary (Debian: apt-get install prometheus)"
    ),
]


def dashboard_queries():
    out = []
    for panel in DASHBOARD["panels"]:
        for t in panel.get("targets", []):
            out.append((f"{panel['title']} [{t['refId']}]", t["expr"]))
    for ann in DASHBOARD["annotations"]["list"]:
        out.append((f"annotation {ann['name']}", ann["expr"]))
    return out


def alert_exprs():
    return [(r["alert"], r["expr"]) for g in ALERTS["groups"] for r in g["rules"]]


def concrete(expr: str) -> str:
    return expr.replace("$__rate_interval", "15s").replace('=~"$instance"', '=~".*"')


def query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


@pytest.fixture(scope="module")
def stack(tansu_broker, tmp_path_factory):
    """learnd fed with drift, bad records and predictions; Prometheus scraping it every second."""
    tmp = tmp_path_factory.mktemp("prom")
    token = "metrics-token-for-test"
    suffix = str(time.monotonic_ns())
    cfg = sea_config(
        tmp,
        kafka={
            "bootstrap_servers": tansu_broker,
            "topic": f"prom-{suffix}",
            "dead_letter_topic": f"prom-{suffix}-dlq",
            "group_id": f"prom-{suffix}",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "max_poll_interval_ms": 10000,
        },
        metrics={"port": free_port(), "token": token},
        checkpoint={"every_s": 1},
        learning={"publish_every_s": 0.5},
    )
    ensure_topics(cfg.kafka, partitions=2)
    daemon = Daemon(cfg)
    daemon.start()
    daemon.run_in_thread()
    # A regression daemon beside it, for the panels only regression fills (MAE, RMSE): small,
    # in one process, its own topic; it joins half of its labels from a label topic.
    reg_cfg = LearndConfig.model_validate(
        {
            "schema": {"task": "regression", "n_features": 3},
            "kafka": {
                **cfg.kafka.model_dump(mode="json", exclude={"sasl_password"}),
                "topic": f"prom-reg-{suffix}",
                "dead_letter_topic": f"prom-reg-{suffix}-dlq",
                "group_id": f"prom-reg-{suffix}",
                "labels_topic": f"prom-reg-{suffix}-labels",
                "predictions_topic": f"prom-reg-{suffix}-predictions",
                "consumer_process": False,
            },
            "labels": {"mode": "join"},
            "model": {"hidden": [8]},
            "serving": {"tcp_port": 0, "processes": 0},
            "metrics": {"port": free_port(), "token": token},
            "checkpoint": {"dir": str(tmp / "reg-ckpt")},
        }
    )
    for topic in (reg_cfg.kafka.topic, reg_cfg.kafka.labels_topic, reg_cfg.kafka.predictions_topic):
        ensure_topics(reg_cfg.kafka.model_copy(update={"topic": topic}), partitions=1)
    regressor = Daemon(reg_cfg)
    regressor.start()
    regressor.run_in_thread()

    (tmp / "token").write_text(token)
    shutil.copy(ROOT / "docker" / "prometheus" / "alerts.yml", tmp / "alerts.yml")
    prom_port = free_port()
    (tmp / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [
                    {
                        "job_name": "learnd",
                        "authorization": {"type": "Bearer", "credentials_file": "token"},
                        "static_configs": [
                            {
                                "targets": [
                                    f"127.0.0.1:{d.metrics_server.address[1]}"
                                    for d in (daemon, regressor)
                                ]
                            }
                        ],
                    }
                ],
            }
        )
    )
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "prometheus.log", "wb"),
    )
    stop = threading.Event()

    def feed():
        producer = KafkaProducer(bootstrap_servers=tansu_broker, acks="all", linger_ms=5)
        events = list(DriftingSEA(seed=31).take(16_000))
        for i, e in enumerate(events):
            if stop.is_set():
                break
            if i >= 8000:  # a hard concept change: every label flips
                e = {**e, "label": 1 - e["label"]}
            value = b"not json" if i % 500 == 7 else orjson.dumps(e)
            producer.send(cfg.kafka.topic, value, partition=i % 2)
            if i % 400 == 0:
                time.sleep(0.2)
            if i < 2000:  # y = x1 + 2 x2 - x3, for the regression daemon
                x = [(i % 7) / 7, (i % 11) / 11, (i % 13) / 13]
                y = x[0] + 2 * x[1] - x[2]
                if i % 2:  # unlabelled, its label on the label topic
                    producer.send(reg_cfg.kafka.topic, orjson.dumps({"id": i, "features": x}))
                    label = {"id": i, "label": y}
                    producer.send(reg_cfg.kafka.labels_topic, orjson.dumps(label))
                else:
                    producer.send(reg_cfg.kafka.topic, orjson.dumps({"features": x, "label": y}))
        producer.flush(30)
        producer.close()

    def ask():
        with LearndClient.tcp(*daemon.server.tcp_address) as c:
            while not stop.is_set():
                c.predict([5.0, 5.0, 5.0])
                time.sleep(0.02)

    def scraped():
        try:
            return query(prom_port, 'up{job="learnd"} == 1')["data"]["result"]
        except OSError:  # URLError too: not listening yet
            return None

    threads = [threading.Thread(target=feed), threading.Thread(target=ask)]
    try:
        wait_for(scraped, 30, 0.2, "prometheus scraping learnd")
        for t in threads:
            t.start()
        wait_for(lambda: daemon.pipeline.drift.alarms >= 1, 60, 0.2, "a drift alarm")
        wait_for(lambda: regressor.pipeline.learner.events_learned >= 1000, 60, 0.2, "regression")
        time.sleep(4)  # a few scrapes after the alarm, so rate() and increase() see it
        yield prom_port, daemon
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(30)
        prom.terminate()
        prom.wait(10)
        for d in (daemon, regressor):
            d.stop()
        for d in (daemon, regressor):
            d.join(30)


def test_prometheus_scrapes_learnd_with_the_token(stack):
    port, _ = stack
    result = query(port, 'up{job="learnd"}')["data"]["result"]
    assert [r["value"][1] for r in result] == ["1", "1"]


@pytest.mark.parametrize(
    ("name", "expr"), dashboard_queries(), ids=[n for n, _ in dashboard_queries()]
)
def test_every_dashboard_query_returns_data(stack, name, expr):
    port, _ = stack
    answer = query(port, concrete(expr))
    assert answer["status"] == "success"
    assert answer["data"]["result"], f"{name}: `{expr}` returned no data"


@pytest.mark.parametrize(("name", "expr"), alert_exprs(), ids=[n for n, _ in alert_exprs()])
def test_every_alert_expression_is_valid_over_existing_metrics(stack, name, expr):
    port, _ = stack
    assert query(port, expr)["status"] == "success"
    for metric in set(re.findall(r"\b(learnd_[a-z_]+)", expr)):
        assert query(port, metric)["data"]["result"], (
            f"{name} names {metric}, which learnd does not export"
        )


def test_alert_rules_are_loaded_and_healthy(stack):
    port, _ = stack
    rules = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).read()
    )
    loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in loaded} == {n for n, _ in alert_exprs()}
    assert all(r["health"] == "ok" for r in loaded), [
        (r["name"], r.get("lastError")) for r in loaded
    ]
