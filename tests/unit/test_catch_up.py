"""The catch-up pace: which batch size and rehearsal it picks at which lag, on measured rates."""

from __future__ import annotations

from learnd.daemon.learning.catch_up import CatchUpPace


def _measured(catch_up_s: float) -> CatchUpPace:
    pace = CatchUpPace(batch_size=32, largest=256, start_lag=10_000, catch_up_s=catch_up_s)
    # 32 with rehearsal 2.5k/s, without 10k/s, then 16k, 25.6k, 32k events/s
    for size, rehearsed, seconds in (
        (32, True, 0.0128),
        (32, False, 0.0032),
        (64, False, 0.004),
        (128, False, 0.005),
        (256, False, 0.008),
    ):
        pace.observe(size, rehearsed, seconds)
    return pace


def test_the_pace_keeps_rehearsal_while_its_rate_meets_lag_over_catch_up_s():
    pace = _measured(catch_up_s=30)
    assert pace.rungs == ((32, True), (32, False), (64, False), (128, False), (256, False))
    # 60k behind wants 2k/s: rehearsed batches of 32 (2.5k/s) keep up
    assert [pace.choose(lag) for lag in (9_000, 60_000, 60_000)] == [(32, True)] * 3
    # 150k behind wants 5k/s: one rung a poll until one measures enough (10k/s)
    assert [pace.choose(150_000) for _ in range(3)] == [(32, False)] * 3
    # 1.5M wants 50k/s, more than the largest (32k/s): the top, and no further
    assert [pace.choose(1_500_000) for _ in range(5)] == [
        (64, False),
        (128, False),
        (256, False),
        (256, False),
        (256, False),
    ]
    # down once the rung below is 1.25x enough: 128 needs lag <= 25.6k*30/1.25 = 614,400
    assert pace.choose(614_401) == (256, False) and pace.choose(614_400) == (128, False)
    assert pace.choose(384_000) == (64, False) and pace.choose(240_000) == (32, False)
    assert pace.choose(60_000) == (32, True)
    assert pace.catching_up and pace.choose(4_999) == (32, True) and not pace.catching_up


def test_a_short_catch_up_s_climbs_at_once_and_none_turns_the_pace_off():
    pace = _measured(catch_up_s=1)
    assert [pace.choose(20_000) for _ in range(4)] == [
        (32, False),
        (64, False),
        (128, False),
        (128, False),  # 25.6k/s >= 20k/s
    ]
    off = CatchUpPace(batch_size=32, largest=256, start_lag=None, catch_up_s=1)
    assert off.choose(10**9) == (32, True) and not off.catching_up


def test_the_target_counts_what_keeps_arriving():
    # 12k behind wants 400/s by the lag alone: rehearsed batches of 32 (2.5k/s) would do, but
    # with 3k/s still arriving the lag would only grow; the pace climbs until it drains
    pace = _measured(catch_up_s=30)
    assert pace.choose(12_000) == (32, True)
    assert pace.choose(12_000, arriving=3_000.0) == (32, False)  # 10k/s >= 3.4k/s
    assert pace.choose(12_000, arriving=3_000.0) == (32, False)
    assert pace.choose(12_000, arriving=12_000.0) == (64, False)  # 10k/s < 12.4k/s


def test_the_arrival_rate_is_how_fast_learned_plus_lag_grows():
    from learnd.daemon.learning.catch_up import ArrivalRate

    r = ArrivalRate(window_s=1.0)
    for t in range(11):  # 5,000 records a second reach the log, every 0.1 s
        r.observe(0.1 * t, 500 * t)
    assert abs(r.rate - 5_000) < 1e-6
    r.observe(1.2, 5_000)  # a backlog learned with nothing new: learned + lag stays put
    assert abs(r.rate - 4_000) < 1e-6


def test_below_catch_up_lag_rehearsal_goes_on_beyond_max_lag_while_it_keeps_the_pace():
    pace = _measured(catch_up_s=30)  # rehearsing: 2.5k events/s
    # 9k behind wants 300/s (+ what arrives): rehearsal keeps it until 2.2k/s arrive
    assert [pace.rehearsal_keeps_pace(9_000, arriving) for arriving in (0, 2_200, 2_201)] == [
        True,
        True,
        False,
    ]
    fresh = CatchUpPace(batch_size=32, largest=256, start_lag=10_000, catch_up_s=30)
    assert fresh.rehearsal_keeps_pace(9_000, 50_000)  # not measured: its first batch measures it
    off = CatchUpPace(batch_size=32, largest=256, start_lag=None, catch_up_s=30)
    assert not off.rehearsal_keeps_pace(1_001)  # catch-up off: the fixed max_lag rule alone


def test_a_backlog_smaller_than_catch_up_lag_is_learned_with_rehearsal(tmp_path):
    from learnd.adapters.fakes import ListDeadLetters, ManualClock
    from learnd.daemon.learning.learner import Learner
    from learnd.daemon.pipeline import Pipeline
    from tests.conftest import sea_config

    cfg = sea_config(tmp_path)  # catch_up_lag 10,000, replay.max_lag 1,000, catch_up_s 30
    learner = Learner(cfg.schema_, cfg.model, cfg.learning, "cpu")
    pipe = Pipeline(cfg, learner, ListDeadLetters(), ManualClock())
    pipe.set_backlog(5_000)
    assert not pipe.pace.catching_up and pipe.replay_steps() == 8  # refilling: 8 steps
    pipe.pace.observe(32, True, seconds=0.2)  # rehearsing measured at 160 events/s
    assert pipe.replay_steps() == 0  # short of 5,000 / 30 s = 167/s: none
    pipe.set_backlog(4_800)  # wants 160/s: enough again
    assert pipe.replay_steps() == 8
