"""The lag learnd reports and acts on counts every record not yet learned: those the consumer
has not fetched, those fetched and handed over the consumer process's pipe, and those batched
and waiting in the pipeline. A learner slowed on purpose lets the consumer run far ahead."""

from __future__ import annotations

import time

import pytest

from learnd.adapters.bootstrap import Daemon
from learnd.adapters.kafka.topics import ensure_topics
from learnd.daemon.events.synthetic import DriftingSEA
from tests.conftest import sea_config

from .test_kafka_daemon import produce

pytestmark = pytest.mark.integration

N = 6000


def _lag(d: Daemon) -> dict[str, float]:
    return {
        s.labels["partition"]: s.value
        for m in d.registry.collect()
        if m.name == "learnd_consumer_lag"
        for s in m.samples
    }


@pytest.mark.parametrize("consumer_process", [True, False])
def test_a_slow_learner_is_behind_by_exactly_what_it_has_not_learned(
    tmp_path, kafka_section, consumer_process
):
    bootstrap, topic = kafka_section["bootstrap_servers"], kafka_section["topic"]
    kafka = {"max_poll_records": 200, "auto_offset_reset": "earliest"}
    cfg = sea_config(
        tmp_path,
        kafka={**kafka_section, **kafka, "consumer_process": consumer_process},
        learning={"batch_size": 32, "catch_up_lag": None},
    )
    ensure_topics(cfg.kafka, partitions=2)
    produce(bootstrap, topic, list(DriftingSEA(seed=31).take(N)))
    d = Daemon(cfg)
    learn_many = d.pipeline.learner.learn_many

    def slow_learn_many(X, y):
        time.sleep(0.003)  # the consumer process runs ahead and fills its pipe
        return learn_many(X, y)

    d.pipeline.learner.learn_many = slow_learn_many  # type: ignore[method-assign]
    d.start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while d.pipeline.learner.events_learned < N and time.monotonic() < deadline:
            d.service.step()
            lag = _lag(d)
            if lag:
                learned = d.pipeline.learner.events_learned
                seen.append((lag, N - learned, d.pipeline.replay_steps()))
        # a partition's log end is known from its first fetch response: at once in the consumer
        # process (it reads ahead); in this process once its records come up (kafka-python
        # parses a partition's fetch response as it hands its records out)
        known = [i for i, (lag, _, _) in enumerate(seen) if len(lag) == 2]
        assert known and (known[0] <= 2 or not consumer_process), [x[0] for x in seen[:5]]
        counted = [(sum(lag.values()), behind, steps) for lag, behind, steps in seen[known[0] :]]
        assert len(counted) >= 10
        # from then on, every record not yet learned is counted, wherever it waits
        assert [c[0] for c in counted] == [c[1] for c in counted]
        # and the decisions taken from the lag see it: no rehearsal this far behind
        assert all(steps == 0 for behind, _, steps in counted if behind > 3000)
    finally:
        d.source.close()
        d.close()
