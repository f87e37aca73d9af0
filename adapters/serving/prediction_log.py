"""The prediction log (``labels.mode = "join"``): every answered ``predict`` request that carries
an ``id``, and every instance of an answered ``predict_many`` that carries ``ids`` (one per
instance), is appended to ``kafka.predictions_topic`` with the features as served, the version
that answered, its scores and a timestamp, to be joined with its label by the daemon.

Appending is asynchronous and batched: the request path only queues what it answered (a bounded
queue: past :data:`MAX_QUEUED` predictions are dropped and counted, never blocking a client), and
a thread of the serving process builds the records and writes them to the producer every
:data:`FLUSH_S` seconds, many predictions per Kafka record: a JSON array of up to
:data:`PER_RECORD` prediction objects and about :data:`RECORD_BYTES` bytes. A Kafka record per
prediction cost kafka-python's producer 37 us of Python each (the serving process's CPU, on
the cores that answer requests); 250 per record, 1.2 us a prediction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from learnd.daemon.config import LearndConfig

log = logging.getLogger("learnd.serving")

MAX_QUEUED = 100_000
FLUSH_S = 0.05
PER_RECORD = 250
RECORD_BYTES = 256 * 1024  # well under Kafka's default 1 MiB message.max.bytes


def record(
    eid: Any, features: Any, version: int, answer: dict, classes: Sequence[Any], ts: float
) -> dict:
    """The logged record of one served prediction: its features as the client sent them (valid:
    they were served; the daemon parses them again with the same parser)."""
    if "scores" in answer:
        scores = [answer["scores"][str(c)] for c in classes]
    else:
        scores = [answer["prediction"]]
    return {"id": eid, "features": features, "version": version, "scores": scores, "ts": ts}


class PredictionLogger:
    """Wraps a request handler; queues a record for each served prediction with an id."""

    def __init__(self, inner: Any, cfg: LearndConfig, send: Callable[[bytes], None]):
        self.inner = inner
        self.classes = cfg.schema_.class_values
        self.send = send
        self.queue: deque[tuple[Any, Any, int, dict, float]] = deque()
        self.logged = 0  # predictions handed to the producer ...
        self.records = 0  # ... in this many Kafka records
        self.dropped = 0  # past MAX_QUEUED
        self.mismatched = 0  # predict_many requests whose ids did not match their instances
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, req: Any) -> dict:
        answer = self.inner.handle(req)
        self._log(req, answer)
        return answer

    def handle_many(self, reqs: Sequence[Any], single: Any = None) -> list[dict]:
        answers = self.inner.handle_many(reqs, single)
        for req, answer in zip(reqs, answers, strict=True):
            self._log(req, answer)
        return answers

    def _log(self, req: Any, answer: dict) -> None:
        if not isinstance(req, dict) or not answer.get("ok"):
            return
        op = req.get("op", "predict")
        if op == "predict" and req.get("id") is not None:
            self._put(req["id"], req["features"], answer["version"], answer)
        elif op == "predict_many" and isinstance(req.get("ids"), list):
            ids, instances = req["ids"], req["instances"]
            if len(ids) != len(instances):
                self.mismatched += 1
                return
            version = answer["version"]
            for eid, features, one in zip(ids, instances, answer["predictions"], strict=True):
                if eid is not None:
                    self._put(eid, features, version, one)

    def _put(self, eid: Any, features: Any, version: int, answer: dict) -> None:
        # the record is built and encoded by the flush thread: the request path only queues
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.queue.append((eid, features, version, answer, time.time()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="learnd-prediction-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()
        close = getattr(self.send, "close", None)  # the producer's: deliver what it holds
        if close is not None:
            close()

    def flush(self) -> None:
        q, classes = self.queue, self.classes
        parts: list[bytes] = []
        size = 0
        while q:
            eid, features, version, answer, ts = q.popleft()
            one = orjson.dumps(record(eid, features, version, answer, classes, ts))
            if parts and (len(parts) >= PER_RECORD or size + len(one) > RECORD_BYTES):
                self._send(parts)
                parts, size = [], 0
            parts.append(one)
            size += len(one) + 1
        if parts:
            self._send(parts)

    def _send(self, parts: list[bytes]) -> None:
        self.send(b"[" + b",".join(parts) + b"]")
        self.logged += len(parts)
        self.records += 1

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.flush()


def kafka_sender(cfg: LearndConfig) -> Callable[[bytes], None]:
    """``send(value)`` to ``kafka.predictions_topic`` through a producer made on first use (in
    the serving process that uses it): confluent-kafka's with ``kafka.client: confluent``
    (2.4 us per record against kafka-python's 37 us, docs/benchmarks.md), else kafka-python's."""
    if cfg.kafka.client == "confluent":
        return _confluent_sender(cfg)
    from kafka import KafkaProducer

    from learnd.adapters.kafka.common import client_options

    producer: list[KafkaProducer] = []
    topic = cfg.kafka.predictions_topic

    def send(value: bytes) -> None:
        if not producer:
            opts = client_options(cfg.kafka) | {"client_id": f"{cfg.kafka.client_id}-predictions"}
            producer.append(KafkaProducer(**opts, acks=1, linger_ms=20))
        producer[0].send(topic, value)

    def close() -> None:
        if producer:
            producer[0].flush(5)

    send.close = close  # type: ignore[attr-defined]
    return send


def producer_config(cfg: LearndConfig) -> dict[str, Any]:
    """confluent-kafka producer settings: the consumers' connection and security settings."""
    from learnd.adapters.kafka.confluent_source import consumer_config

    keep = ("bootstrap.servers", "reconnect.backoff.max.ms", "security.", "sasl.", "ssl.")
    conf = {k: v for k, v in consumer_config(cfg.kafka).items() if k.startswith(keep)}
    return conf | {
        "client.id": f"{cfg.kafka.client_id}-predictions",
        "acks": 1,
        "linger.ms": 20,
    }


def _confluent_sender(cfg: LearndConfig) -> Callable[[bytes], None]:
    from confluent_kafka import Producer

    producer: list[Producer] = []
    topic = cfg.kafka.predictions_topic

    def send(value: bytes) -> None:
        if not producer:
            producer.append(Producer(producer_config(cfg)))
        p = producer[0]
        try:
            p.produce(topic, value)
        except BufferError:  # its queue is full: wait for deliveries, then once more
            p.poll(1.0)
            p.produce(topic, value)
        p.poll(0)  # serve delivery reports, so the queue drains

    def close() -> None:
        if producer:
            producer[0].flush(5)

    send.close = close  # type: ignore[attr-defined]
    return send


def with_prediction_log(handler: Any, cfg: LearndConfig, registry: Any = None) -> Any:
    """``handler``, logging its predictions when ``labels.mode`` is ``join`` (with its counts in
    ``registry``, a Prometheus registry, if given)."""
    if cfg.labels.mode != "join":
        return handler
    logger = PredictionLogger(handler, cfg, kafka_sender(cfg))
    if registry is not None:
        from learnd.adapters.metrics.join import PredictionLogCollector

        registry.register(PredictionLogCollector(logger))
    logger.start()
    return logger
