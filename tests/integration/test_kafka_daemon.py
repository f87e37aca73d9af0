"""The daemon with its real adapters against a real Kafka-compatible broker."""

from __future__ import annotations

import urllib.request

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from learnd.adapters.serving.client import LearndClient
from learnd.daemon.events.synthetic import DriftingSEA

from .conftest import wait_for

pytestmark = pytest.mark.integration


def produce(bootstrap, topic, values, partitions=2):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i, v in enumerate(values):
        raw = v if isinstance(v, bytes) else orjson.dumps(v)
        producer.send(topic, value=raw, partition=i % partitions)
    producer.flush(30)
    producer.close()


def read_topic(bootstrap, topic, expected, timeout_s=30):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    parts = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, p) for p in parts])
    out = []
    wait_for(
        lambda: out.extend(consumer.poll(500).values()) or sum(map(len, out)) >= expected,
        timeout_s,
        what=f"{expected} records on {topic}",
    )
    consumer.close()
    return [r for batch in out for r in batch]


def learned(d, n):
    return lambda: d.pipeline.learner.events_learned >= n


def test_produce_learn_predict_over_socket(start_daemon, kafka_section):
    events = list(DriftingSEA(seed=11).take(12_000))
    produce(kafka_section["bootstrap_servers"], kafka_section["topic"], events[:4000])
    d = start_daemon()
    wait_for(learned(d, 4000), 60, what="4000 events learned")
    # the stream stops: what was learned is served, judged on the evidence there is
    wait_for(lambda: d.pipeline.ref.current.trained_events >= 4000, 30, what="a 4000+ model served")
    assert d.pipeline.ref.current.version >= 2
    host, port = d.server.tcp_address
    with LearndClient.tcp(host, port) as c:
        ans = c.predict({"x1": 9.0, "x2": 9.0, "x3": 0.0})
        assert ans["version"] >= 2 and ans["prediction"] == 1
        assert c.predict({"x1": 0.5, "x2": 0.5, "x3": 0.0})["prediction"] == 0
        info = c.info()
        assert info["trained_events"] >= 4000 and info["metrics"]["accuracy"] > 0.85
        assert c.health()["ready"] is True
    d.stop()
    d.join(30)
    assert d.service.health.checkpoints >= 1
    # the group offsets were committed after the final checkpoint (for monitoring)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_section["bootstrap_servers"],
        group_id=kafka_section["group_id"],
        enable_auto_commit=False,
    )
    committed = {p: consumer.committed(TopicPartition(kafka_section["topic"], p)) for p in (0, 1)}
    consumer.close()
    half = d.pipeline.learner.events_learned // 2  # round-robin over 2 partitions
    assert committed == {0: half, 1: half} == d.pipeline.positions


BAD = {
    "not_json": b"{{{",
    "not_object": b"[1, 2, 3]",
    "missing_field": b'{"features": {"x1": 1, "x2": 2}, "label": 1}',
    "wrong_type": b'{"features": {"x1": 1, "x2": "2", "x3": 3}, "label": 1}',
    "wrong_dimension": b'{"features": [1, 2], "label": 1}',
    "non_finite": b'{"features": {"x1": 1, "x2": 2, "x3": 1e999}, "label": 1}',
    "out_of_range": b'{"features": {"x1": 1, "x2": 2, "x3": 1e38}, "label": 1}',
    "unknown_class": b'{"features": {"x1": 1, "x2": 2, "x3": 3}, "label": "maybe"}',
}


def test_every_kind_of_bad_record_is_dead_lettered_with_reason_and_source(
    start_daemon, kafka_section
):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    good = list(DriftingSEA(seed=12).take(300))
    extra_field = {**good[0], "id": "extra", "comment": "extra fields are fine"}
    values = [*good[:150], *BAD.values(), extra_field, *good[150:]]
    produce(bootstrap, topic, values, partitions=1)
    d = start_daemon()
    wait_for(learned(d, 301), 60, what="valid events learned")
    letters = read_topic(bootstrap, kafka_section["dead_letter_topic"], len(BAD))
    assert len(letters) == len(BAD)
    by_reason = {}
    for r in letters:
        h = {k: v.decode() for k, v in r.headers}
        by_reason[h["learnd.reason"]] = (r.value, h)
    assert set(by_reason) == set(BAD)
    for reason, raw in BAD.items():
        value, h = by_reason[reason]
        assert value == raw, "the original bytes travel unchanged"
        assert h["learnd.source.topic"] == topic and h["learnd.source.partition"] == "0"
        assert int(h["learnd.source.offset"]) == 150 + list(BAD).index(reason)
        assert h["learnd.detail"]
    assert d.pipeline.learner.events_learned == 301
    assert dict(d.pipeline.rejected) == {reason: 1 for reason in BAD}


@pytest.mark.parametrize("consumer_process", [True, False], ids=["consumer-process", "in-thread"])
def test_restart_resumes_from_checkpoint_nothing_lost_nothing_twice(
    start_daemon, kafka_section, consumer_process
):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    events = list(DriftingSEA(seed=13).take(3000))
    produce(bootstrap, topic, events[:2000])
    kafka = {"consumer_process": consumer_process}
    d1 = start_daemon(kafka=kafka)
    wait_for(learned(d1, 2000), 60, what="first 2000 learned")
    d1.stop()
    d1.join(30)
    v1 = d1.pipeline.ref.current.version
    produce(bootstrap, topic, events[2000:])
    d2 = start_daemon(kafka=kafka)
    assert d2.pipeline.learner.events_learned == 2000, "restored from the checkpoint"
    assert d2.pipeline.ref.current.version > v1
    wait_for(learned(d2, 3000), 60, what="all 3000 learned")
    wait_for(lambda: sum(d2.source.lag().values()) == 0 and d2.source.lag(), 10, what="lag 0")
    import time

    time.sleep(1.5)  # give a duplicate delivery the chance to show up
    assert d2.pipeline.learner.events_learned == 3000
    assert d2.pipeline.positions == {0: 1500, 1: 1500}


def test_metrics_scrape(start_daemon, kafka_section):
    produce(
        kafka_section["bootstrap_servers"],
        kafka_section["topic"],
        [*DriftingSEA(seed=14).take(1000), b"junk"],
    )
    d = start_daemon(
        learning={"gate": {"enabled": False}}, compression={"enabled": False}
    )  # publish() swaps at once here
    wait_for(learned(d, 1000), 60, what="1000 learned")
    d.pipeline.publish()
    with LearndClient.tcp(*d.server.tcp_address) as c:
        c.predict([1, 2, 3])
    wait_for(lambda: d.source.lag(), 10, what="lag known")
    host, port = d.metrics_server.address

    def scrape():
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
        samples = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    # serving processes report their request metrics every half second
    key = ("learnd_prediction_requests_total", (("op", "predict"), ("outcome", "ok")))
    samples = wait_for(lambda: (s := scrape()).get(key) and s, 10, what="request metrics")
    assert samples[("learnd_events_total", (("outcome", "valid"),))] == 1000
    assert samples[("learnd_events_total", (("outcome", "invalid"),))] == 1
    assert samples[("learnd_dead_letters_total", (("reason", "not_json"),))] == 1
    assert samples[("learnd_model_version", ())] >= 2
    assert 0.5 < samples[("learnd_rolling_accuracy", ())] <= 1
    assert samples[("learnd_consumer_lag", (("partition", "0"),))] == 0
    assert (
        samples[("learnd_prediction_requests_total", (("op", "predict"), ("outcome", "ok")))] == 1
    )
    assert samples[("learnd_prediction_latency_seconds_count", (("op", "predict"),))] == 1
    assert samples[("learnd_ready", ())] == 1
    assert ("process_resident_memory_bytes", ()) in samples
