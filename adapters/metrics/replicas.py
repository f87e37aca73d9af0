"""Metrics of the models topic: the learner's writer and a serving replica's follower, read at
scrape time from their plain counters."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from learnd.adapters.kafka.models_follower import REASONS, ModelsFollower
from learnd.adapters.kafka.models_publisher import ModelsPublisher
from learnd.daemon.serving.histogram import Histogram


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    buckets = [(str(b), c) for b, c in zip(hist.buckets, hist.cumulative(), strict=True)]
    family.add_metric([], [*buckets, ("+Inf", hist.count)], hist.sum)
    return family


class ModelsPublisherCollector(Collector):
    def __init__(self, publisher: ModelsPublisher):
        self.publisher = publisher

    def collect(self):
        p = self.publisher
        family = CounterMetricFamily(
            "learnd_models_topic_snapshots",
            "Served snapshots for kafka.models_topic: written, dropped for a newer one before "
            "they were written, or failed writes (retried with the newest).",
            labels=["outcome"],
        )
        for outcome, value in (("written", p.sent), ("dropped", p.dropped), ("failed", p.failed)):
            family.add_metric([outcome], value)
        yield family
        yield CounterMetricFamily(
            "learnd_models_topic_records", "Records written to kafka.models_topic.", value=p.records
        )
        yield CounterMetricFamily(
            "learnd_models_topic_bytes",
            "Bytes of snapshot records written to kafka.models_topic.",
            value=p.bytes,
        )
        yield CounterMetricFamily(
            "learnd_models_topic_pins", "Pin records written to kafka.models_topic.", value=p.pins
        )
        yield _histogram(
            "learnd_models_topic_write_seconds",
            "Seconds from a snapshot served on the learner to its records acknowledged.",
            p.latency,
        )


class ReplicaCollector(Collector):
    def __init__(self, follower: ModelsFollower):
        self.follower = follower

    def collect(self):
        f = self.follower
        snap = f.ref.current
        yield GaugeMetricFamily(
            "learnd_model_version",
            "Version of the model being served.",
            value=snap.version if snap is not None else 0,
        )
        yield CounterMetricFamily(
            "learnd_replica_snapshots_served",
            "Snapshots from kafka.models_topic this replica checked and served.",
            value=f.served,
        )
        rejected = CounterMetricFamily(
            "learnd_replica_rejected",
            "Records or snapshots from kafka.models_topic refused, by reason.",
            labels=["reason"],
        )
        for reason in REASONS:
            rejected.add_metric([reason], f.rejected.get(reason, 0))
        yield rejected
        records = CounterMetricFamily(
            "learnd_replica_records", "Records read from kafka.models_topic.", labels=["kind"]
        )
        for kind in ("snapshot", "pin", "tombstone"):
            records.add_metric([kind], f.records.get(kind, 0))
        yield records
        yield GaugeMetricFamily(
            "learnd_replica_pinned",
            "1 while the learner's serving is pinned by a rollback (its pin records).",
            value=1 if f.pinned else 0,
        )
        yield GaugeMetricFamily(
            "learnd_replica_first_served_seconds",
            "Seconds from this replica's start to serving its first snapshot (NaN: not yet).",
            value=f.first_served_s if f.first_served_s is not None else float("nan"),
        )
        yield _histogram(
            "learnd_replica_delay_seconds",
            "Seconds from a snapshot published on the learner to served here (wall clocks: "
            "includes their skew).",
            f.delay,
        )
