"""What the daemon says about the broker: nothing alarming when it is there from the start."""

from __future__ import annotations

import logging

from learnd.adapters.fakes import ListDeadLetters, ListSource, ManualClock, MemoryCheckpointStore
from learnd.daemon.events.synthetic import DriftingSEA
from learnd.daemon.learning.learner import Learner
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.service import Service
from tests.conftest import sea_config


class FlakySource(ListSource):
    """Reachable or not, poll by poll, as ``states`` says."""

    def __init__(self, states):
        super().__init__()
        self.states = list(states)

    def poll(self, timeout_s):
        self.up = self.states.pop(0)
        return super().poll(timeout_s) if self.up else []

    def connected(self):
        return self.up


def service(tmp_path, source):
    cfg = sea_config(tmp_path)
    clock = ManualClock()
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    pipe = Pipeline(cfg, learner, ListDeadLetters(), clock)
    return Service(pipe, source, MemoryCheckpointStore(), cfg.checkpoint, clock=clock)


def broker_lines(caplog):
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "learnd.service" and "broker" in r.getMessage()
    ]


def test_a_broker_reachable_from_the_start_is_no_warning(tmp_path, caplog):
    src = ListSource()
    src.append(list(DriftingSEA(seed=1).take(100)))
    svc = service(tmp_path, src)
    with caplog.at_level(logging.INFO, logger="learnd.service"):
        svc.step()
        svc.step()
    assert broker_lines(caplog) == [("INFO", "broker reachable")]


def test_outages_are_warned_both_ways_and_one_at_start(tmp_path, caplog):
    src = FlakySource([False, False, True, True, False, True])
    svc = service(tmp_path, src)
    with caplog.at_level(logging.INFO, logger="learnd.service"):
        for _ in range(6):
            svc.step()
    assert broker_lines(caplog) == [
        ("WARNING", "broker unreachable at start; retrying"),
        ("WARNING", "broker reachable again"),
        ("WARNING", "broker unreachable; retrying"),
        ("WARNING", "broker reachable again"),
    ]
