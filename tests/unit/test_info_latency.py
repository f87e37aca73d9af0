"""`info` reports the served form's batch-1 latency for every published model, not only for
those whose form the compression step chose."""

from __future__ import annotations

import pytest

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from learnd.daemon.serving.requests import RequestHandler
from tests.conftest import sea_config


@pytest.mark.parametrize(
    ("compression", "gate"),
    [(True, True), (False, True), (False, False)],
    ids=["default", "compression off", "no gate"],
)
def test_info_reports_latency_us_for_the_first_and_later_models(tmp_path, compression, gate):
    cfg = sea_config(
        tmp_path,
        compression={"enabled": compression, "after_drift_events": 0},
        learning={
            "gate": {"enabled": gate, "window": 200},
            "replay": {"steps_per_batch": 0, "refill_steps_per_batch": 0},
        },
    )
    clock = ManualClock()
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    pipe = Pipeline(cfg, learner, ListDeadLetters(), clock)
    src = ListSource()
    svc = Service(pipe, src, MemoryCheckpointStore(), cfg.checkpoint, clock=clock)
    handler = RequestHandler(pipe.ref, cfg.schema_)
    svc.restore()  # publishes the first model
    first = handler.handle({"op": "info"})
    assert first["ok"] and first["version"] == 1
    assert isinstance(first["latency_us"], float) and first["latency_us"] > 0
    src.append(list(DriftingSEA(seed=3).take(2000)))
    while src.remaining():
        svc.step()
        clock.advance(1.0)
    later = handler.handle({"op": "info"})
    assert later["version"] > 1, "a later model was published"
    assert isinstance(later["latency_us"], float) and later["latency_us"] > 0
