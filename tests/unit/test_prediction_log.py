"""The prediction log holds exactly the served predictions that carried an id, as served."""

from __future__ import annotations

import orjson

from learnd.adapters.serving.prediction_log import PredictionLogger
from learnd.daemon.config import LearndConfig
from learnd.daemon.events.record import Record
from learnd.daemon.labels.stage import JoinStage
from learnd.daemon.serving.requests import RequestHandler
from learnd.daemon.serving.snapshot import SnapshotRef
from tests.unit.test_snapshot_serving import SCHEMA, draft, weights

CFG = LearndConfig.model_validate(
    {"schema": SCHEMA.model_dump(), "labels": {"mode": "join"}, "serving": {"tcp_port": 0}}
)


def test_logged_records_are_exactly_the_served_predictions_with_an_id():
    ref = SnapshotRef()
    ref.publish(draft())
    sent: list[bytes] = []
    log = PredictionLogger(RequestHandler(ref, SCHEMA), CFG, sent.append)
    answers = [
        log.handle({"op": "predict", "features": {"a": 1, "b": 2}, "id": "r1"}),
        log.handle({"op": "predict", "features": {"a": 1, "b": 2}}),  # no id: not logged
        log.handle({"op": "predict", "features": {"a": 1}, "id": "bad"}),  # an error
        log.handle({"op": "predict_many", "instances": [[1, 2]], "id": "many"}),
        log.handle({"op": "health", "id": "h"}),
    ]
    ref.publish(draft(weights(sign=-1.0)))
    answers += log.handle_many(
        [{"features": [3, 4], "id": 7}, {"op": "versions"}, {"features": [0, 1], "id": 8}]
    )
    log.flush()
    assert len(sent) == 1  # one Kafka record holds the flush's predictions
    served = [
        (a["id"], a["version"]) for a in answers if a.get("ok") and a.get("id") in ("r1", 7, 8)
    ]
    records = [r for v in sent for r in orjson.loads(v)]
    assert [(r["id"], r["version"]) for r in records] == served == [("r1", 1), (7, 2), (8, 2)]
    assert [r["features"] for r in records] == [{"a": 1, "b": 2}, [3, 4], [0, 1]]
    by_id = {a["id"]: a for a in answers if "id" in a}
    for r in records:
        assert r["scores"] == [by_id[r["id"]]["scores"][c] for c in ("0", "1")]
    assert log.logged == 3 and log.dropped == 0

    # the daemon joins them with their labels and scores the served predictions per version
    join = JoinStage(CFG)
    log_recs = [Record(CFG.kafka.predictions_topic, 0, i, v) for i, v in enumerate(sent)]
    wrong = {7: 1 - by_id[7]["prediction"]}  # id 7's label is not what was served
    labels = [
        Record(CFG.kafka.labels_topic, 0, k, orjson.dumps({"id": r["id"], "label": label}))
        for k, r in enumerate(records)
        for label in [wrong.get(r["id"], by_id[r["id"]]["prediction"])]
    ]
    assert join.take_records(log_recs + labels, now=0.0) == []
    batch, dead = join.take(now=0.0)
    assert batch is not None and batch.ids == ("r1", 7, 8) and dead == []
    assert join.served.summary() == {1: {"n": 1, "accuracy": 1.0}, 2: {"n": 2, "accuracy": 0.5}}


def test_predict_many_with_ids_is_logged_per_instance_and_counts_are_exported():
    from prometheus_client import CollectorRegistry

    from learnd.adapters.metrics.join import PredictionLogCollector

    ref = SnapshotRef()
    ref.publish(draft())
    sent: list[bytes] = []
    log = PredictionLogger(RequestHandler(ref, SCHEMA), CFG, sent.append)
    registry = CollectorRegistry()
    registry.register(PredictionLogCollector(log))
    many = log.handle(
        {
            "op": "predict_many",
            "instances": [[1, 2], {"a": 3, "b": 4}, [5, 6]],
            "ids": [1, None, "c"],
        }
    )
    log.handle({"op": "predict_many", "instances": [[1, 2]], "ids": [1, 2]})  # not one per row
    log.handle({"op": "predict_many", "instances": [[1]], "ids": ["bad"]})  # an error
    log.flush()
    records = [r for v in sent for r in orjson.loads(v)]
    assert [(r["id"], r["version"], r["features"]) for r in records] == [
        (1, 1, [1, 2]),
        ("c", 1, [5, 6]),
    ]
    served = many["predictions"]
    assert [r["scores"] for r in records] == [
        [served[i]["scores"][c] for c in ("0", "1")] for i in (0, 2)
    ]
    value = registry.get_sample_value
    assert value("learnd_prediction_log_total", {"outcome": "written"}) == 2
    assert value("learnd_prediction_log_total", {"outcome": "mismatched"}) == 1
    assert value("learnd_prediction_log_total", {"outcome": "dropped"}) == 0
    assert value("learnd_prediction_log_queued") == 0


def test_a_flush_writes_records_of_at_most_per_record_predictions_and_record_bytes(monkeypatch):
    from learnd.adapters.serving import prediction_log

    ref = SnapshotRef()
    ref.publish(draft())
    sent: list[bytes] = []
    log = PredictionLogger(RequestHandler(ref, SCHEMA), CFG, sent.append)
    n = prediction_log.PER_RECORD * 2 + 3
    log.handle(
        {"op": "predict_many", "instances": [[i, 1] for i in range(n)], "ids": list(range(n))}
    )
    log.flush()
    sizes = [len(orjson.loads(v)) for v in sent]
    assert sizes == [prediction_log.PER_RECORD, prediction_log.PER_RECORD, 3]
    assert [r["id"] for v in sent for r in orjson.loads(v)] == list(range(n))
    assert (log.logged, log.records) == (n, 3)

    # a record also ends before it would pass RECORD_BYTES (each of these is ~95 bytes)
    monkeypatch.setattr(prediction_log, "RECORD_BYTES", 300)
    sent.clear()
    log.handle(
        {"op": "predict_many", "instances": [[i, 1] for i in range(5)], "ids": list(range(5))}
    )
    log.flush()
    assert len(sent) > 1 and all(len(v) <= 300 for v in sent)
    for v, after in zip(sent, sent[1:], strict=False):  # the next one would not have fitted
        assert len(v) + len(orjson.dumps(orjson.loads(after)[0])) + 1 > 300
    assert [r["id"] for v in sent for r in orjson.loads(v)] == list(range(5))


def test_each_prediction_of_a_record_is_joined_or_dead_lettered_on_its_own():
    good = {"id": "g", "features": [1, 2], "version": 3, "scores": [0.25, 0.75], "ts": 1.0}
    bad_version = {**good, "id": "v", "version": -1}
    value = orjson.dumps([good, bad_version, 17])
    topic = CFG.kafka.predictions_topic
    join = JoinStage(CFG)
    dead = join.take_records(
        [
            Record(topic, 0, 5, value),
            Record(topic, 0, 6, b"[]"),
            Record(topic, 0, 7, orjson.dumps({**good, "id": "single"})),
        ],
        now=0.0,
    )
    assert [(r.record.offset, str(r.reason), orjson.loads(r.record.value)) for r in dead] == [
        (5, "wrong_type", bad_version),
        (5, "not_json", 17),
        (6, "not_json", []),
    ]
    assert join.positions[topic] == {0: 8}
    labels = [
        Record(CFG.kafka.labels_topic, 0, k, orjson.dumps({"id": i, "label": 1}))
        for k, i in enumerate(("g", "single"))
    ]
    assert join.take_records(labels, now=0.0) == []
    batch, out = join.take(now=0.0)
    assert batch is not None and batch.ids == ("g", "single") and out == []
    assert batch.offsets.tolist() == [5, 7]
    assert join.served.summary() == {3: {"n": 2, "accuracy": 1.0}}


def test_confluent_producer_config_keeps_connection_and_security_settings_only():
    from learnd.adapters.serving.prediction_log import producer_config

    cfg = CFG.model_copy(
        update={
            "kafka": CFG.kafka.model_copy(
                update={"client": "confluent", "security_protocol": "SASL_SSL"}
            )
        }
    )
    conf = producer_config(cfg)
    assert conf["bootstrap.servers"] == cfg.kafka.bootstrap_servers
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["client.id"] == f"{cfg.kafka.client_id}-predictions"
    assert not {"group.id", "enable.auto.commit", "auto.offset.reset"} & set(conf)
