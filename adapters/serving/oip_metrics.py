"""Request metrics of the Open Inference Protocol listeners (per serving process, summed into
the daemon's ``/metrics`` with the NDJSON socket's).

Labels are bounded: ``protocol`` is ``http`` or ``grpc``; ``endpoint`` one of :data:`ENDPOINTS`;
``code`` an HTTP status or a gRPC status name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

ENDPOINTS = ("live", "ready", "metadata", "infer", "other")


def endpoint_of(path: str) -> str:
    """The endpoint an HTTP path names (anything unknown: ``other``)."""
    if not path.startswith("/v2"):
        return "other"
    for end in ("infer", "ready", "live"):
        if path.endswith("/" + end):
            return end
    return "metadata"


class OipMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "learnd_oip_requests",
            "Open Inference Protocol requests answered.",
            ["protocol", "endpoint", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "learnd_oip_latency_seconds",
            "Time to answer one Open Inference Protocol request (routing to answer).",
            ["protocol", "endpoint"],
            registry=registry,
            buckets=(25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 0.01, 0.05, 0.25, 1.0),
        )

    def observer(self, protocol: str):
        """``observe(endpoint, code, seconds)`` for one protocol."""

        def observe(endpoint: str, code: str, seconds: float) -> None:
            self.requests.labels(protocol, endpoint, code).inc()
            self.latency.labels(protocol, endpoint).observe(seconds)

        return observe
