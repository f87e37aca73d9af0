"""RELIABILITY test 20: every secret empty, blank or missing, from the file, the environment or a
flag, for every non-loopback bind: start-up is refused, naming the field; and a token that is
set is always checked."""

from __future__ import annotations

import itertools
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client import CollectorRegistry

from learnd.adapters.metrics.prometheus import MetricsServer
from learnd.adapters.settings import ConfigError, build_config
from learnd.daemon.config import ServingConfig, secret_fields

BINDS = {"serving.token": "serving.tcp_host", "metrics.token": "metrics.host"}
HOSTS = ["0.0.0.0", "::", "192.0.2.7", "learnd.example.com"]
BAD = ["", " ", "\t", " \n ", None]  # None: missing
LAYERS = ["toml", "yaml", "env", "flag"]


def _config(tmp_path, layer: str, values: dict[str, str | None]):
    """build_config with ``values`` (dotted key -> value; None: left out) from one layer."""
    given = {k: v for k, v in values.items() if v is not None}
    if layer in ("toml", "yaml"):
        tree: dict = {"schema": {"n_features": 3}}
        for key, value in given.items():
            section, field = key.split(".")
            tree.setdefault(section, {})[field] = value
        path = tmp_path / f"learnd.{layer}"
        if layer == "yaml":
            path.write_text(yaml.safe_dump(tree))
        else:
            lines = ["schema = { n_features = 3 }"]
            for section in (s for s in tree if s != "schema"):
                lines.append(f"[{section}]")
                lines += [f"{k} = {_toml(v)}" for k, v in tree[section].items()]
            path.write_text("\n".join(lines) + "\n")
        return build_config(file=path, environ={})
    if layer == "env":
        env = {"LEARND_SCHEMA__N_FEATURES": "3"}
        env |= {"LEARND_" + k.upper().replace(".", "__"): v for k, v in given.items()}
        return build_config(environ=env)
    flags = [f"{k}={v}" for k, v in given.items()]
    return build_config(environ={"LEARND_SCHEMA__N_FEATURES": "3"}, overrides=flags)


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") + '"'


def test_the_secrets_are_the_ones_this_test_covers():
    assert set(secret_fields()) == {*BINDS, "kafka.sasl_password"}


@pytest.mark.parametrize(
    "secret,host,bad,layer", list(itertools.product(BINDS, HOSTS, BAD, LAYERS))
)
def test_a_non_loopback_bind_without_a_real_token_is_refused(tmp_path, secret, host, bad, layer):
    bind = BINDS[secret]
    with pytest.raises(ConfigError, match=secret.replace(".", r"\.")):
        _config(tmp_path, layer, {bind: host, secret: bad})


@pytest.mark.parametrize("bad,layer", list(itertools.product(BAD[:-1], LAYERS)))
def test_an_empty_or_blank_secret_is_refused_even_on_loopback(tmp_path, bad, layer):
    for secret in secret_fields():
        with pytest.raises(ConfigError, match=secret.replace(".", r"\.")) as e:
            _config(tmp_path, layer, {secret: bad})
        assert "empty or blank" in str(e.value)


@pytest.mark.parametrize("bad,layer", list(itertools.product(BAD, LAYERS)))
def test_sasl_without_a_real_password_is_refused(tmp_path, bad, layer):
    sasl = {
        "kafka.security_protocol": "SASL_PLAINTEXT",
        "kafka.sasl_mechanism": "PLAIN",
        "kafka.sasl_username": "learnd",
    }
    with pytest.raises(ConfigError, match="sasl_password"):
        _config(tmp_path, layer, {**sasl, "kafka.sasl_password": bad})


@pytest.mark.parametrize("layer", LAYERS)
def test_a_real_token_is_accepted_from_every_layer(tmp_path, layer):
    cfg = _config(
        tmp_path,
        layer,
        {
            "serving.tcp_host": "0.0.0.0",
            "serving.token": "s3cret",
            "metrics.host": "0.0.0.0",
            "metrics.token": "m3trics",
        },
    )
    assert cfg.serving.token.get_secret_value() == "s3cret"
    assert cfg.metrics.token.get_secret_value() == "m3trics"
    assert "s3cret" not in str(cfg.redacted())


def test_the_refusal_does_not_echo_the_secret(tmp_path):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, "env", {"serving.token": "   "})
    assert "got" not in str(e.value)


def test_a_set_metrics_token_is_always_checked():
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, token="m3trics")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.address[1]}/metrics"
        for header in (None, "Bearer ", "Bearer wrong", "m3trics"):
            req = urllib.request.Request(url, headers={"Authorization": header} if header else {})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 401
        ok = urllib.request.Request(url, headers={"Authorization": "Bearer m3trics"})
        assert urllib.request.urlopen(ok, timeout=5).status == 200
    finally:
        server.stop()


def test_config_built_in_code_refuses_an_empty_token_too():
    with pytest.raises(ValueError, match="empty or blank"):
        ServingConfig(token="")
    with pytest.raises(ValueError, match="empty or blank"):
        ServingConfig(token=" \t ")
