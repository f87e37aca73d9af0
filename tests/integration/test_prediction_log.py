"""The prediction log through a real broker: a serving process logs exactly the predictions it
served with an id; the daemon joins them with labels from the label topic and scores them."""

from __future__ import annotations

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.kafka.topics import ensure_topics
from learnd.adapters.serving.client import LearndClient
from tests.conftest import sea_config
from tests.integration.conftest import wait_for

N = 30


def test_served_predictions_are_logged_joined_and_scored(tmp_path, tansu_broker, unique):
    cfg = sea_config(
        tmp_path,
        kafka={
            "bootstrap_servers": tansu_broker,
            "topic": f"plog-{unique}",
            "dead_letter_topic": f"plog-{unique}-dlq",
            "labels_topic": f"plog-{unique}-labels",
            "predictions_topic": f"plog-{unique}-predictions",
            "group_id": f"plog-{unique}",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        labels={"mode": "join"},
        serving={"processes": 1},
        metrics={"enabled": False},
    )
    k = cfg.kafka
    for topic in (k.topic, k.labels_topic, k.predictions_topic):
        ensure_topics(k.model_copy(update={"topic": topic}), partitions=1)
    daemon = Daemon(cfg)
    daemon.start()
    daemon.run_in_thread()
    try:
        with LearndClient.tcp(*daemon.server.tcp_address) as c:
            answers = [
                c.request({"op": "predict", "features": [i / 10, 5.0, 1.0], "id": i})
                for i in range(N)
            ]
            c.request({"op": "predict", "features": [1.0, 1.0, 1.0]})  # no id: not logged
        # assigned, not subscribed: kafka-python 3.0 can lose a group join that completes
        # between two polls of this loop, and the reader then never gets the partition
        consumer = KafkaConsumer(bootstrap_servers=tansu_broker, auto_offset_reset="earliest")
        consumer.assign([TopicPartition(k.predictions_topic, 0)])
        logged: list[dict] = []
        wait_for(
            lambda: (
                logged.extend(
                    p
                    for rs in consumer.poll(500).values()
                    for r in rs
                    for p in orjson.loads(r.value)
                )
                or len(logged) >= N
            ),
            30,
            what="the logged predictions",
        )
        consumer.close()
        assert [(r["id"], r["version"]) for r in logged] == [
            (a["id"], a["version"]) for a in answers
        ]
        assert [r["features"] for r in logged] == [[i / 10, 5.0, 1.0] for i in range(N)]

        # labels: what was served for even ids, the other class for odd ones
        producer = KafkaProducer(bootstrap_servers=tansu_broker, acks="all")
        for a in answers:
            label = a["prediction"] if a["id"] % 2 == 0 else 1 - a["prediction"]
            producer.send(k.labels_topic, orjson.dumps({"id": a["id"], "label": label}))
        producer.flush(30)
        producer.close()
        join = daemon.pipeline.join
        wait_for(lambda: join.joiner.outcomes["matched"] == N, 60, what="the labels joined")
        expected: dict[int, list[int]] = {}
        for a in answers:
            expected.setdefault(a["version"], []).append(int(a["id"] % 2 == 0))
        assert join.served.summary() == {
            v: {"n": len(h), "accuracy": sum(h) / len(h)} for v, h in expected.items()
        }
        wait_for(lambda: daemon.learner.events_learned == N, 30, what="the joined rows learned")
    finally:
        daemon.stop()
        daemon.join(30)
