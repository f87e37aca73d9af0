"""The label join's metrics (``labels.mode = "join"``), read at scrape time from the join's
state, like the rest of the model state (:mod:`learnd.adapters.metrics.prometheus`)."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from learnd.daemon.labels.stage import JoinStage


class JoinCollector(Collector):
    def __init__(self, join: JoinStage, source: object = None):
        self.join = join
        self.source = source

    def collect(self):
        j = self.join
        outcomes = CounterMetricFamily(
            "learnd_join",
            "How feature rows and labels of the join ended (matched, expired, default_label, "
            "duplicate, orphan).",
            labels=["outcome"],
        )
        for outcome, n in sorted(j.joiner.outcomes.items()):
            outcomes.add_metric([outcome], n)
        yield outcomes
        yield CounterMetricFamily(
            "learnd_join_evicted",
            "Feature rows expired early because labels.max_pending was reached.",
            value=j.joiner.evicted,
        )
        yield CounterMetricFamily(
            "learnd_join_labels", "Valid label records read from the label topic.", value=j.labels
        )
        yield GaugeMetricFamily(
            "learnd_join_pending", "Feature rows waiting for their label.", value=j.joiner.pending
        )
        yield GaugeMetricFamily(
            "learnd_join_early_labels",
            "Labels waiting for their features.",
            value=j.joiner.early_labels,
        )
        hist = j.delay
        delay = HistogramMetricFamily(
            "learnd_label_delay_seconds", "Seconds from features to their label, when matched."
        )
        buckets = [(str(b), c) for b, c in zip(hist.buckets, hist.cumulative(), strict=True)]
        delay.add_metric([], [*buckets, ("+Inf", hist.count)], hist.sum)
        yield delay
        summary = j.served.summary()
        key = "mae" if j.served.task == "regression" else "accuracy"
        score = GaugeMetricFamily(
            f"learnd_join_served_{key}",
            "The served predictions' score against their labels, per served version (the newest "
            "16 versions).",
            labels=["version"],
        )
        scored = CounterMetricFamily(
            "learnd_join_served_scored",
            "Logged predictions scored against their labels, per served version.",
            labels=["version"],
        )
        for version, s in summary.items():
            score.add_metric([str(version)], s[key])
            scored.add_metric([str(version)], s["n"])
        yield score
        yield scored
        label_lag = getattr(self.source, "label_lag", None)
        if label_lag is not None:
            yield GaugeMetricFamily(
                "learnd_label_lag",
                "Records behind the end of the label topic and the prediction log.",
                value=label_lag(),
            )


class PredictionLogCollector(Collector):
    """The prediction log's records of one process (summed over serving processes)."""

    def __init__(self, logger: object):
        self.logger = logger

    def collect(self):
        lg: Any = self.logger
        fam = CounterMetricFamily(
            "learnd_prediction_log",
            "Served predictions with an id, written to kafka.predictions_topic or dropped "
            "(queue full), and predict_many requests not logged (ids not one per instance).",
            labels=["outcome"],
        )
        for outcome, n in (
            ("written", lg.logged),
            ("dropped", lg.dropped),
            ("mismatched", lg.mismatched),
        ):
            fam.add_metric([outcome], n)
        yield fam
        yield GaugeMetricFamily(
            "learnd_prediction_log_queued",
            "Served predictions queued for kafka.predictions_topic.",
            value=len(lg.queue),
        )
