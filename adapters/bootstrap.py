"""The composition root: wires real adapters into the core from one validated config.

Nothing connects at import time. :class:`Daemon` creates the Kafka clients when constructed,
restores state and opens the listeners in :meth:`Daemon.start`, and releases them all in
:meth:`Daemon.close`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import torch

from learnd.adapters.cpu_threads import limit_blas_threads
from learnd.adapters.kafka.dead_letter_sink import KafkaDeadLetters
from learnd.adapters.kafka.models_publisher import ModelsPublisher
from learnd.adapters.kafka.sources import open_source
from learnd.adapters.metrics.join import JoinCollector
from learnd.adapters.metrics.prometheus import LearndCollector, MetricsServer, make_registry
from learnd.adapters.metrics.replicas import ModelsPublisherCollector
from learnd.adapters.serving.metrics import ServingMetrics
from learnd.adapters.serving.prediction_log import with_prediction_log
from learnd.adapters.serving.processes import ServingProcesses, SummedServingCollector
from learnd.adapters.serving.socket_server import PredictionServer
from learnd.adapters.storage.local import LocalCheckpointStore
from learnd.daemon.config import LearndConfig
from learnd.daemon.failpoints import NONE
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from learnd.daemon.serving.requests import RequestHandler

log = logging.getLogger("learnd")


class Daemon:
    def __init__(
        self, cfg: LearndConfig, source=None, dead_letters=None, store=None, failpoints=NONE
    ):
        self.cfg = cfg
        torch.set_num_threads(cfg.learning.threads)
        limit_blas_threads(cfg.learning.threads)
        sys.setswitchinterval(cfg.serving.gil_switch_interval_s)
        if cfg.learning.deterministic:
            # cuBLAS is deterministic only with a fixed workspace, set before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.learner = Learner(cfg.schema_, cfg.model, cfg.learning, cfg.learning.device)
        self._own_dead_letters = dead_letters is None
        self.dead_letters = dead_letters or KafkaDeadLetters(cfg.kafka)
        self.pipeline = Pipeline(
            cfg, self.learner, self.dead_letters, time.monotonic, failpoints=failpoints
        )
        self.store = store or checkpoint_store(cfg, failpoints)
        self.source = source or open_source(cfg, self.pipeline.join)
        self.service = Service(
            self.pipeline,
            self.source,
            self.store,
            cfg.checkpoint,
            poll_timeout_s=cfg.kafka.poll_timeout_ms / 1000,
            failpoints=failpoints,
        )
        self.registry = make_registry(
            LearndCollector(self.pipeline, self.service.health, self.source)
        )
        if self.pipeline.join is not None:
            self.registry.register(JoinCollector(self.pipeline.join, self.source))
        handler = RequestHandler(
            self.pipeline.ref,
            cfg.schema_,
            cfg.serving.max_batch,
            health=self.service.health.as_dict,
            allow_rollback=cfg.serving.allow_rollback,
        )
        self.server: PredictionServer | ServingProcesses
        if cfg.serving.processes:
            self.server = ServingProcesses(
                cfg, self.pipeline.ref, handler, self.service.health.as_dict
            )
            self.registry.register(SummedServingCollector(self.server))
        else:
            self.serving_metrics = ServingMetrics(self.registry)
            self.server = PredictionServer(
                with_prediction_log(handler, cfg, self.registry),
                cfg.serving,
                self.serving_metrics.observe,
            )
        self.models: ModelsPublisher | None = None  # kafka.models_topic, for replicas
        if cfg.kafka.models_topic is not None:
            self.models = ModelsPublisher(cfg.kafka, self.pipeline.ref)
            self.registry.register(ModelsPublisherCollector(self.models))
        self.metrics_server: MetricsServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Restore state, publish the model, open the listeners. Does not start consuming."""
        self.service.restore()
        self.server.start()
        if self.models is not None:
            self.models.start()
        if self.cfg.metrics.enabled:
            m = self.cfg.metrics
            token = m.token.get_secret_value() if m.token is not None else None
            self.metrics_server = MetricsServer(self.registry, m.host, m.port, token)
            self.metrics_server.start()
        oip = getattr(self.server, "oip", None)  # Open Inference Protocol listeners
        log.info(
            "learnd started",
            extra={
                "event": "start",
                "device": str(self.learner.device),
                "tcp": self.server.tcp_address,
                "unix": str(self.server.unix_path) if self.server.unix_path else None,
                "metrics": self.metrics_server.address if self.metrics_server else None,
                "oip_http": oip.http_address if oip else None,
                "oip_grpc": oip.grpc_address if oip else None,
                "topic": self.cfg.kafka.topic,
                "model_version": self.pipeline.ref.current.version,
            },
        )

    def run(self) -> None:
        """Consume and learn in this thread until :meth:`stop`; then checkpoint and close."""
        try:
            self.service.run()
        finally:
            self.close()

    def run_in_thread(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="learnd-learner", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self.service.stop()

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def close(self) -> None:
        if self.models is not None:
            self.models.close()
        self.server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self._own_dead_letters:
            self.dead_letters.close()
        log.info("learnd stopped", extra={"event": "stop"})


def checkpoint_store(cfg: LearndConfig, failpoints=NONE):
    """The checkpoint store the config names (local directory or S3)."""
    ck = cfg.checkpoint
    if ck.store == "s3":
        from learnd.adapters.storage.s3 import S3CheckpointStore

        return S3CheckpointStore(
            ck.s3_bucket, ck.s3_prefix, ck.keep, endpoint_url=ck.s3_endpoint_url
        )
    return LocalCheckpointStore(ck.dir, ck.keep, failpoints)
