from __future__ import annotations

import json

import pytest

from learnd.adapters.cli.main import main
from learnd.adapters.settings import ConfigError, build_config
from learnd.daemon.config import LearndConfig

MIN_ENV = {"LEARND_SCHEMA__N_FEATURES": "3"}


def test_defaults_bind_every_listener_to_loopback():
    cfg = build_config(environ=MIN_ENV)
    assert cfg.serving.tcp_host == "127.0.0.1"
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.kafka.auto_offset_reset == "earliest"


def test_precedence_file_then_env_then_flags(tmp_path):
    f = tmp_path / "learnd.toml"
    f.write_text(
        '[schema]\nn_features = 3\n[kafka]\ntopic = "from-file"\ngroup_id = "file-group"\n'
        'client_id = "file-client"\n'
    )
    env = {"LEARND_KAFKA__TOPIC": "from-env", "LEARND_KAFKA__GROUP_ID": "env-group"}
    cfg = build_config(file=f, environ=env, overrides=["kafka.topic=from-flag"])
    assert (cfg.kafka.topic, cfg.kafka.group_id, cfg.kafka.client_id) == (
        "from-flag",
        "env-group",
        "file-client",
    )


def test_yaml_file_and_json_values(tmp_path):
    f = tmp_path / "learnd.yaml"
    f.write_text("schema:\n  task: multiclass\n  n_features: 2\n  classes: [a, b, c]\n")
    cfg = build_config(file=f, environ={"LEARND_MODEL__HIDDEN": "[16, 8]"})
    assert cfg.model.hidden == (16, 8)
    assert cfg.schema_.classes == ("a", "b", "c")


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        (
            {"LEARND_KAFKA__AUTO_OFFSET_RESET": "newest"},
            [],
            "kafka.auto_offset_reset: Input should be 'earliest' or 'latest' (got 'newest')",
        ),
        ({"LEARND_KAFKA__TOPICC": "x"}, [], "kafka.topicc: unknown key; valid keys here:"),
        (
            {"LEARND_NOPE__X": "1"},
            [],
            "nope: unknown key; valid keys here: checkpoint, compression, kafka",
        ),
        (
            {"LEARND_KAFKA_TOPIC": "t"},
            [],
            "LEARND_KAFKA_TOPIC: not a config key; sections and keys",
        ),
        (
            {},
            ["learning.drift.detector=magic"],
            "learning.drift.detector: Input should be 'adwin', 'page_hinkley', 'kswin' or 'none'",
        ),
        ({}, ["learning.device=tpu"], "learning.device: Input should be 'auto', 'cpu' or 'cuda'"),
        ({}, ["serving.tcp_host=0.0.0.0"], "serving.tcp_host '0.0.0.0' is not a loopback address"),
        ({}, ["metrics.host=10.1.2.3"], "metrics.host '10.1.2.3' is not a loopback address"),
        ({}, ["kafka.heartbeat_interval_ms=20000"], "must be lower than kafka.session_timeout_ms"),
        ({}, ['schema.features=["a","b"]'], "schema.n_features (3) contradicts schema.features"),
        (
            {},
            ["learning.batch_size=0"],
            "learning.batch_size: Input should be greater than or equal to 1",
        ),
    ],
)
def test_invalid_config_names_the_field_and_valid_values(env, flags, message):
    with pytest.raises(ConfigError) as e:
        build_config(environ={**MIN_ENV, **env}, overrides=flags)
    assert message in str(e.value)


def test_missing_schema_is_reported():
    with pytest.raises(ConfigError, match="schema: required"):
        build_config(environ={})


def test_non_loopback_bind_with_token_is_allowed():
    cfg = build_config(
        environ={
            **MIN_ENV,
            "LEARND_SERVING__TCP_HOST": "0.0.0.0",
            "LEARND_SERVING__TOKEN": "s3cret",
        }
    )
    assert cfg.serving.token.get_secret_value() == "s3cret"


def test_config_is_frozen():
    cfg = build_config(environ=MIN_ENV)
    with pytest.raises(ValueError):
        cfg.kafka.topic = "other"  # type: ignore[misc]


def test_config_show_redacts_secrets(capsys, monkeypatch):
    monkeypatch.setenv("LEARND_SCHEMA__N_FEATURES", "3")
    monkeypatch.setenv("LEARND_SERVING__TOKEN", "hunter2-token")
    monkeypatch.setenv("LEARND_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LEARND_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("LEARND_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("LEARND_KAFKA__SASL_PASSWORD", "pa55word")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-token" not in out and "pa55word" not in out
    shown = json.loads(out)
    assert shown["serving"]["token"] == "**********"
    assert shown["kafka"]["sasl_password"] == "**********"
    assert shown["kafka"]["sasl_username"] == "svc"


def test_cli_exits_2_with_the_message_on_bad_config(capsys, monkeypatch):
    monkeypatch.setenv("LEARND_SCHEMA__N_FEATURES", "3")
    assert main(["config", "show", "--set", "kafka.auto_offset_reset=newest"]) == 2
    assert "kafka.auto_offset_reset" in capsys.readouterr().err


def test_schema_validation_rules():
    with pytest.raises(ValueError, match="needs schema.classes"):
        LearndConfig.model_validate({"schema": {"task": "multiclass", "n_features": 2}})
    with pytest.raises(ValueError, match="exactly 2"):
        LearndConfig.model_validate(
            {"schema": {"task": "binary", "n_features": 2, "classes": ["a", "b", "c"]}}
        )


def test_kafka_security_options_reach_the_clients_and_secrets_stay_hidden():
    from learnd.adapters.kafka.common import client_options

    cfg = build_config(
        environ={
            **MIN_ENV,
            "LEARND_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "LEARND_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
            "LEARND_KAFKA__SASL_USERNAME": "svc",
            "LEARND_KAFKA__SASL_PASSWORD": "pa55word",
            "LEARND_KAFKA__SSL_CAFILE": "/etc/ca.pem",
            "LEARND_KAFKA__BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
        }
    )
    opts = client_options(cfg.kafka)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-256"
    assert opts["sasl_plain_username"] == "svc" and opts["sasl_plain_password"] == "pa55word"
    assert opts["ssl_cafile"] == "/etc/ca.pem" and opts["bootstrap_servers"] == [
        "b1:9093",
        "b2:9093",
    ]
    assert "pa55word" not in repr(cfg) and "pa55word" not in str(cfg.redacted())
    with pytest.raises(ConfigError, match="SASL_\\* needs kafka.sasl_mechanism"):
        build_config(environ={**MIN_ENV, "LEARND_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"})


def test_the_fetch_wait_reaches_the_confluent_client():
    consumer_config = pytest.importorskip("learnd.adapters.kafka.confluent_source").consumer_config
    cfg = build_config(environ={**MIN_ENV, "LEARND_KAFKA__FETCH_MAX_WAIT_MS": "35"})
    assert consumer_config(cfg.kafka)["fetch.wait.max.ms"] == 35


def test_an_unknown_kafka_client_names_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        build_config(environ={**MIN_ENV, "LEARND_KAFKA__CLIENT": "librdkafka"})
    assert "kafka.client" in str(e.value) and "'kafka-python'" in str(e.value)


def test_the_confluent_client_without_its_package_stops_startup_saying_how_to_install(
    monkeypatch,
):
    import sys

    from learnd.adapters.kafka.sources import open_source
    from learnd.daemon.errors import StartupError

    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails
    monkeypatch.delitem(sys.modules, "learnd.adapters.kafka.confluent_source", raising=False)
    cfg = build_config(environ={**MIN_ENV, "LEARND_KAFKA__CLIENT": "confluent"})
    for in_process in (True, False):  # refused at start-up, not in the consumer process
        cfg = cfg.model_copy(
            update={"kafka": cfg.kafka.model_copy(update={"consumer_process": not in_process})}
        )
        with pytest.raises(StartupError, match=r"kafka.client is 'confluent'.*learnd\[confluent\]"):
            open_source(cfg)
