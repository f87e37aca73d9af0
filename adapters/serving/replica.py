"""``learnd serve``: a serving-only replica that follows ``kafka.models_topic``.

The replica is the serving half of the daemon without its learner: a
:class:`~learnd.daemon.serving.snapshot.SnapshotRef` kept on the newest checked snapshot of the
topic by a :class:`~learnd.adapters.kafka.models_follower.ModelsFollower`, and the same
listeners as ``learnd run`` over it: the serving processes (``serving.processes``, mirrored
through the same shared-memory channel) with the NDJSON socket and the Open Inference
Protocol, or the in-process socket server with ``serving.processes: 0``; its own ``/metrics``.
``rollback`` and ``unpin`` belong to the learner (a replica obeys what the learner writes to
the topic) and are refused here; ``versions`` and ``export`` answer from the versions this
replica has served.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from learnd.adapters.kafka.models_follower import ModelsFollower
from learnd.adapters.metrics.prometheus import MetricsServer, make_registry
from learnd.adapters.metrics.replicas import ReplicaCollector
from learnd.adapters.serving.metrics import ServingMetrics
from learnd.adapters.serving.processes import ServingProcesses, SummedServingCollector
from learnd.adapters.serving.socket_server import PredictionServer
from learnd.daemon.config import LearndConfig
from learnd.daemon.errors import StartupError
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import SnapshotRef

log = logging.getLogger("learnd")

LEARNER_OPS = ("rollback", "unpin")


class ReplicaHandler:
    """The replica's request handler: the daemon's, less the operations of the learner."""

    def __init__(self, inner: RequestHandler):
        self.inner = inner

    def handle(self, req: Any) -> dict:
        if isinstance(req, dict) and req.get("op") in LEARNER_OPS:
            out = {
                "ok": False,
                "error": "forbidden",
                "detail": f"{req['op']} is the learner's: a replica serves what the learner "
                "writes to kafka.models_topic; send it to the learner",
            }
            if req.get("id") is not None:
                out["id"] = req["id"]
            return out
        return self.inner.handle(req)

    def handle_many(self, reqs, single=None) -> list[dict]:
        return self.inner.handle_many(reqs, single=single or self.handle)


class Replica:
    def __init__(self, cfg: LearndConfig, consumer=None):
        if cfg.kafka.models_topic is None:
            raise StartupError(
                "learnd serve follows kafka.models_topic, which is not set: set it to the "
                "topic the learner writes (the same value in the learner's config)"
            )
        self.cfg = cfg
        self.ref = SnapshotRef(keep=cfg.serving.keep_versions)
        self.follower = ModelsFollower(cfg.kafka, cfg.schema_, self.ref, consumer)
        self.registry = make_registry(ReplicaCollector(self.follower))
        handler = ReplicaHandler(
            RequestHandler(
                self.ref,
                cfg.schema_,
                cfg.serving.max_batch,
                health=self.health,
                allow_rollback=False,
            )
        )
        self.server: PredictionServer | ServingProcesses
        if cfg.serving.processes:
            self.server = ServingProcesses(cfg, self.ref, handler, self.health)  # type: ignore[arg-type]
            self.registry.register(SummedServingCollector(self.server))
        else:
            self.serving_metrics = ServingMetrics(self.registry)
            self.server = PredictionServer(handler, cfg.serving, self.serving_metrics.observe)  # type: ignore[arg-type]
        self.metrics_server: MetricsServer | None = None
        self._stopped = threading.Event()

    def health(self) -> dict:
        f = self.follower
        problems = [] if f.broker_connected else ["broker unreachable"]
        serving = self.ref.current is not None
        status = "ready" if serving and not problems else ("degraded" if serving else "starting")
        return {
            "alive": True,
            "ready": serving,
            "status": status,
            "problems": problems,
            "role": "replica",
            "caught_up": f.caught_up,
            "pinned": bool(f.pinned),
        }

    def start(self) -> None:
        self.server.start()
        if self.cfg.metrics.enabled:
            m = self.cfg.metrics
            token = m.token.get_secret_value() if m.token is not None else None
            self.metrics_server = MetricsServer(self.registry, m.host, m.port, token)
            self.metrics_server.start()
        self.follower.start()
        oip = getattr(self.server, "oip", None)
        log.info(
            "learnd replica started",
            extra={
                "event": "start",
                "role": "replica",
                "tcp": self.server.tcp_address,
                "unix": str(self.server.unix_path) if self.server.unix_path else None,
                "metrics": self.metrics_server.address if self.metrics_server else None,
                "oip_http": oip.http_address if oip else None,
                "oip_grpc": oip.grpc_address if oip else None,
                "models_topic": self.cfg.kafka.models_topic,
            },
        )

    def run(self) -> None:
        """Serve until :meth:`stop`; then close."""
        try:
            self._stopped.wait()
        finally:
            self.close()

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self.follower.stop()
        self.server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("learnd replica stopped", extra={"event": "stop"})
