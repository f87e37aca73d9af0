"""The consumer process's bookkeeping on the daemon's side (the process itself: integration)."""

from __future__ import annotations

from learnd.adapters.kafka.consumer_process import ConsumerProcess, _idle_status
from tests.conftest import sea_config


def test_counters_survive_a_replaced_consumer_process(tmp_path):
    source = ConsumerProcess(sea_config(tmp_path))
    source._status = {**_idle_status(), "handovers": 2, "skipped_records": 40}
    source._forget()  # the child is gone; a new one counts from 0
    assert source.handovers == 2 and source.skipped_records == 40
    source._status = {**_idle_status(), "handovers": 1, "out_of_range_resets": 1}
    assert source.handovers == 3 and source.skipped_records == 40
    assert source.out_of_range_resets == 1 and source.handover_commit_failures == 0
    assert source.assigned() == 0 and not source.connected() and source.pid is None
