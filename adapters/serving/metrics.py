"""Request metrics of the prediction server (in the daemon, or in each serving process).

Labels are bounded: ``op`` is one of :data:`learnd.daemon.serving.requests.OPS` or ``unknown``; ``outcome`` is
``ok`` or an error code from a fixed set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from learnd.daemon.serving.requests import OPS

SERVING_OPS = (*OPS, "unknown")


class ServingMetrics:
    """Counters and a latency histogram for prediction requests, labelled by op and outcome."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "learnd_prediction_requests",
            "Prediction-socket requests.",
            ["op", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "learnd_prediction_latency_seconds",
            "Time to answer one request (parse to answer).",
            ["op"],
            registry=registry,
            buckets=(25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 0.01, 0.05, 0.25, 1.0),
        )
        self._children = {op: self.latency.labels(op) for op in SERVING_OPS}

    def observe(self, op: str, outcome: str, seconds: float) -> None:
        self.requests.labels(op, outcome).inc()
        self._children[op].observe(seconds)
