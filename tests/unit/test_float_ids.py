"""Events whose id is a float are learned like any other; the exactly-once audit counts only the
integer ids."""

from __future__ import annotations

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from tests.conftest import sea_config


def test_float_ids_are_learned_not_dead_lettered_and_not_audited(tmp_path):
    cfg = sea_config(tmp_path, checkpoint={"audit_ids": True})
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    dead = ListDeadLetters()
    pipe = Pipeline(cfg, learner, dead, ManualClock())
    src = ListSource()
    ids = [0, 1.0, 2, 3.5, "4", 12.0, 1]
    src.append(
        [{**e, "id": i} for e, i in zip(DriftingSEA(seed=5).take(len(ids)), ids, strict=True)]
    )
    svc = Service(pipe, src, MemoryCheckpointStore(), cfg.checkpoint, clock=ManualClock())
    svc.restore()
    while src.remaining():
        svc.step()
    svc.checkpoint()
    assert dead.sent == [] and learner.events_learned == len(ids)
    assert pipe.audit.tolist() == [1, 1, 1]  # ids 0, 1 and 2; 1.0, 3.5, "4" and 12.0 not counted
