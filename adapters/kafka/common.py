"""Options shared by every kafka-python client learnd creates (security, client id)."""

from __future__ import annotations

from typing import Any

from learnd.daemon.config import KafkaConfig


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers.split(","),
        "client_id": cfg.client_id,
        "security_protocol": cfg.security_protocol,
        "reconnect_backoff_max_ms": cfg.reconnect_backoff_max_ms,
    }
    if cfg.sasl_mechanism is not None:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_username
        opts["sasl_plain_password"] = (
            cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
        )
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(cfg, key)
        if value is not None:
            opts[key] = str(value)
    return opts


def broker_connected(consumer: Any) -> bool:
    """Whether a kafka-python consumer holds a broker connection open (its
    ``connection-count`` metric): it retries a lost broker inside ``poll`` without raising, so
    this, not an exception, says that the broker is unreachable."""
    metrics = consumer.metrics().get("consumer-metrics", {})
    return metrics.get("connection-count", 0) > 0
