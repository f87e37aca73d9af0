"""Prometheus exposition: a registry of learnd's own, a collector that reads model state at
scrape time, request counters where requests happen, and the /metrics HTTP endpoint.

Nothing in the learning hot loop calls into prometheus_client: the core keeps plain counters
and :class:`LearndCollector` turns them into samples when Prometheus scrapes (the way
client_python's ``GCCollector`` reads ``gc.get_stats()``).
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from learnd.adapters.bind_errors import bind_error
from learnd.daemon.events.decoder import Reason
from learnd.daemon.ports import EventSource

if TYPE_CHECKING:  # a serving replica uses this module without the learner (and torch)
    from learnd.daemon.pipeline import Pipeline
    from learnd.daemon.service import Health


def _counter(name: str, doc: str, label: str, values: Mapping[str, float]) -> CounterMetricFamily:
    """A counter family with one label and a sample per ``values`` item."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


class LearndCollector(Collector):
    def __init__(self, pipeline: Pipeline, health: Health, source: EventSource):
        self.pipeline = pipeline
        self.health = health
        self.source = source

    def collect(self):
        p = self.pipeline
        learner = p.learner
        rejected = dict(p.rejected)  # one C-level copy: safe against the learning thread

        yield _counter(
            "learnd_events",
            "Records consumed, by outcome.",
            "outcome",
            {"valid": p.valid, "invalid": sum(rejected.values())},
        )
        yield _counter(
            "learnd_dead_letters",
            "Records dead-lettered, by reason.",
            "reason",
            {r.value: rejected.get(r.value, 0) for r in Reason},
        )
        if p.layout is not None:  # typed features: the label set is the declared features
            missing = dict(p.missing)
            yield _counter(
                "learnd_missing_values",
                "Missing feature values imputed, by declared feature.",
                "feature",
                {name: missing.get(name, 0) for name, spec in p.layout.specs if spec.imputes},
            )
        yield _counter(
            "learnd_dead_letters_oversize",
            "Dead letters over kafka.dead_letter_max_bytes: sent truncated, or dropped when "
            "refused even without key and value.",
            "outcome",
            {"truncated": p.dead_letters.truncated, "dropped": p.dead_letters.dropped},
        )
        yield CounterMetricFamily("learnd_batches", "Micro-batches learned.", value=p.batches)
        yield _counter(
            "learnd_learn_steps",
            "Optimizer steps, by outcome.",
            "outcome",
            {
                "applied": learner.steps,
                "skipped_nonfinite": learner.skipped_steps,
                "failed": p.learn_failures,
                "replay": learner.replay_steps,
                "replay_failed": p.replay_failures,
            },
        )
        yield CounterMetricFamily(
            "learnd_rollbacks", "Returns to the last good model state.", value=learner.rollbacks
        )
        yield CounterMetricFamily(
            "learnd_events_learned",
            "Events the model has learned from.",
            value=learner.events_learned,
        )
        yield GaugeMetricFamily("learnd_learning_rate", "Current learning rate.", value=learner.lr)
        if learner.member is not None:
            yield GaugeMetricFamily(
                "learnd_linear_member_serving",
                "1 while the linear member predicts and is served, 0 while the MLP is.",
                value=float(learner.serving is learner.member),
            )
            yield CounterMetricFamily(
                "learnd_member_switches",
                "Hand-overs between the MLP and the linear member.",
                value=learner.selection.switches,
            )
        yield GaugeMetricFamily(
            "learnd_replay_window_events",
            "Recently learned events held for rehearsal (emptied at drift alarms and rollbacks).",
            value=len(learner.window),
        )
        yield GaugeMetricFamily(
            "learnd_replay_steps_per_batch",
            "Rehearsal steps taken per micro-batch now (0 while the consumer is behind).",
            value=p.replay_steps(),
        )

        summary = p.metrics.summary()
        for name, value in summary.items():
            yield GaugeMetricFamily(
                f"learnd_rolling_{name}",
                f"Prequential {name.replace('_', ' ')} over the last {p.metrics.window} events.",
                value=value if math.isfinite(value) else math.nan,
            )

        snap = p.ref.current
        for name, value in p.publisher.served_metrics.summary().items():
            yield GaugeMetricFamily(
                f"learnd_served_{name}",
                f"The served version's prequential {name.replace('_', ' ')} over the last "
                f"{p.publisher.served_metrics.window} events (its predictions before they were learned).",
                value=value if math.isfinite(value) else math.nan,
            )
        yield GaugeMetricFamily(
            "learnd_served_lag_events",
            "Events the learner has learned that the served version has not.",
            value=max(0, learner.events_learned - snap.trained_events) if snap else 0,
        )
        yield GaugeMetricFamily(
            "learnd_served_age_seconds",
            "Seconds since the served version was published.",
            value=max(0.0, time.time() - snap.published_unix) if snap else math.nan,
        )
        hist = p.publisher.latency
        latency = HistogramMetricFamily(
            "learnd_publish_latency_seconds",
            "Seconds from a candidate frozen to it serving (judged on the next batch).",
        )
        buckets = [(str(b), c) for b, c in zip(hist.buckets, hist.cumulative(), strict=True)]
        latency.add_metric([], [*buckets, ("+Inf", hist.count)], hist.sum)
        yield latency
        yield GaugeMetricFamily(
            "learnd_batch_size",
            "Micro-batch size in use (larger while catching up on a backlog).",
            value=p.batcher.size,
        )
        yield GaugeMetricFamily(
            "learnd_model_version",
            "Version of the served model.",
            value=snap.version if snap else 0,
        )
        yield GaugeMetricFamily(
            "learnd_model_parameters",
            "Parameters of the served model.",
            value=snap.n_parameters if snap else 0,
        )
        yield GaugeMetricFamily(
            "learnd_model_published_timestamp_seconds",
            "Unix time the served model was published.",
            value=snap.published_unix if snap else 0,
        )
        yield _counter(
            "learnd_publishes",
            "Publish attempts, by outcome.",
            "outcome",
            {
                "published": p.publisher.published,
                "rejected_nonfinite": p.publisher.publish_failures,
                "rejected_gate": p.publisher.gate_rejected,
                "pinned": p.publisher.publish_pinned,
                "waiting_versions": p.publisher.publish_waits,
            },
        )
        unscored = CounterMetricFamily(
            "learnd_publish_unscored_batches",
            "Batches learned behind the log without being scored by the served version: past "
            "the publish path's share of the learning thread (learning.publish_budget).",
        )
        unscored.add_metric([], p.publisher.budget.skipped)
        yield unscored
        forms = CounterMetricFamily(
            "learnd_compression_forms",
            "Compressed forms checked at publish, by form and outcome (served, plain, passed, "
            "slower, worse, nonfinite, unavailable, skipped_drift).",
            labels=["form", "outcome"],
        )
        for (name, outcome), count in sorted(p.publisher.compression.items()):
            forms.add_metric([name, outcome], count)
        yield forms
        yield GaugeMetricFamily(
            "learnd_model_forward_seconds",
            "Measured batch-1 forward time of the served form at publish.",
            value=snap.latency_us / 1e6 if snap and math.isfinite(snap.latency_us) else math.nan,
        )
        yield GaugeMetricFamily(
            "learnd_serving_pinned",
            "1 while a rollback pins serving (publishing paused until unpinned).",
            value=1.0 if p.ref.pinned else 0.0,
        )
        yield GaugeMetricFamily(
            "learnd_model_size_bytes",
            "Bytes of the served model's arrays.",
            value=snap.size_bytes if snap else 0,
        )
        yield GaugeMetricFamily(
            "learnd_model_sparsity",
            "Share of the served model's weights that are zero.",
            value=snap.sparsity if snap else 0,
        )
        verdict = p.publisher.last_verdict
        yield GaugeMetricFamily(
            "learnd_gate_candidate_score",
            "Score of the last candidate on its fresh window (accuracy, or -MAE).",
            value=verdict.candidate_score if verdict else math.nan,
        )
        yield GaugeMetricFamily(
            "learnd_gate_served_score",
            "Score of the served model on that same window.",
            value=verdict.served_score if verdict else math.nan,
        )
        form = GaugeMetricFamily(
            "learnd_model_form", "1 for the form of the served model.", labels=["form"]
        )
        if snap:
            form.add_metric([snap.form], 1)
        yield form

        yield CounterMetricFamily(
            "learnd_drift_alarms", "Concept-drift alarms raised.", value=p.drift.alarms
        )
        yield GaugeMetricFamily(
            "learnd_drift_error_estimate",
            "The drift detector's estimate of the current error rate.",
            value=p.drift.estimation,
        )

        ch = p.challenger
        if ch is not None:
            yield CounterMetricFamily(
                "learnd_drift_warnings",
                "Drift warnings (the more sensitive detector that starts a challenger).",
                value=ch.warnings,
            )
            yield GaugeMetricFamily(
                "learnd_challenger_training",
                "1 while a background challenger learns beside the served model.",
                value=1 if ch.learner is not None else 0,
            )
            outcomes = CounterMetricFamily(
                "learnd_challengers",
                "Background challengers, by outcome (started, promoted, dropped).",
                labels=["outcome"],
            )
            for outcome, n in (
                ("started", ch.started),
                ("promoted", ch.promoted),
                ("dropped", ch.dropped),
            ):
                outcomes.add_metric([outcome], n)
            yield outcomes

        inputs = p.input_drift
        alarms = CounterMetricFamily(
            "learnd_input_drift_alarms",
            "Shifts detected in a feature's batch mean (input drift, apart from concept drift).",
            labels=["feature"],
        )
        estimate = GaugeMetricFamily(
            "learnd_input_drift_estimate",
            "The input-drift detector's estimate of each feature's batch mean.",
            labels=["feature"],
        )
        for name, est in inputs.estimates().items():
            alarms.add_metric([name], inputs.alarms[name])
            estimate.add_metric([name], est)
        yield alarms
        yield estimate

        lag = GaugeMetricFamily(
            "learnd_consumer_lag",
            "Records not yet learned, per partition: not fetched, in flight to the learner, "
            "or batched and waiting.",
            labels=["partition"],
        )
        for part, n in p.unlearned.items():
            lag.add_metric([str(part)], n)
        yield lag
        fetch = GaugeMetricFamily(
            "learnd_consumer_fetch_lag",
            "Records not yet handed to the learner, per partition (learnd_consumer_lag without "
            "what waits in the micro-batcher).",
            labels=["partition"],
        )
        for part, n in sorted(self.source.lag().items()):
            fetch.add_metric([str(part)], n)
        yield fetch

        yield CounterMetricFamily(
            "learnd_offset_out_of_range",
            "Positions found out of range and moved per auto_offset_reset.",
            value=getattr(self.source, "out_of_range_resets", 0),
        )
        yield CounterMetricFamily(
            "learnd_offset_skipped_records",
            "Records skipped by out-of-range repositioning (never silently).",
            value=getattr(self.source, "skipped_records", 0),
        )
        yield _counter(
            "learnd_rebalance_handovers",
            "Revocations checkpointed before the hand-over, by whether the commit was accepted.",
            "outcome",
            {
                "committed": getattr(self.source, "handovers", 0),
                "commit_refused": getattr(self.source, "handover_commit_failures", 0),
            },
        )
        h = self.health
        yield _counter(
            "learnd_checkpoints",
            "Checkpoint attempts, by outcome.",
            "outcome",
            {"ok": h.checkpoints, "failed": h.checkpoint_failures},
        )
        yield GaugeMetricFamily(
            "learnd_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last good checkpoint (0: none yet).",
            value=h.last_checkpoint_unix,
        )
        state = h.as_dict()
        yield GaugeMetricFamily(
            "learnd_ready",
            "1 when a model is loaded and consuming.",
            value=1 if state["ready"] else 0,
        )
        yield GaugeMetricFamily(
            "learnd_broker_connected",
            "1 while a broker connection is up.",
            value=1 if h.broker_connected else 0,
        )
        yield GaugeMetricFamily(
            "learnd_degraded",
            "1 when checkpoints are failing.",
            value=1 if state["status"] == "degraded" else 0,
        )


def make_registry(collector: Collector | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if collector is not None:
        registry.register(collector)
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        return


class MetricsServer:
    """/metrics over HTTP, optionally behind a bearer token."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, token: str | None = None):
        app = make_wsgi_app(registry)
        expected = f"Bearer {token}".encode() if token is not None else None

        def guarded(environ, start_response):
            if expected is not None:
                given = environ.get("HTTP_AUTHORIZATION", "").encode()
                if not hmac.compare_digest(given, expected):
                    start_response("401 Unauthorized", [("Content-Type", "text/plain")])
                    return [b"unauthorized\n"]
            return app(environ, start_response)

        try:
            self.httpd = make_server(
                host, port, guarded, ThreadingWSGIServer, handler_class=_QuietHandler
            )
        except OSError as e:
            raise bind_error("metrics.port", host, port, e) from None
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="learnd-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
