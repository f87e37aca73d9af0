"""The typed parser's numbers: a plain float in range is taken as it is; every other value goes
through the full check, which names the problem. And category keys are remembered, not
recomputed differently."""

from __future__ import annotations

import math

from learnd.daemon.config import SchemaConfig
from learnd.daemon.events.reasons import Reason
from learnd.daemon.events.typed import TypedParser, category_key

SCHEMA = SchemaConfig(task="binary", features={"x": "number", "c": "category"})


def parse(x):
    return TypedParser(SCHEMA).parse({"x": x, "c": "a"})


def test_floats_in_range_pass_at_the_bound() -> None:
    for x in (0.0, -2.5, 1e15, -1e15):
        row, problem = parse(x)
        assert problem is None and row is not None and row[0] == x


def test_floats_out_of_range_or_not_finite_are_rejected() -> None:
    cases = {
        math.inf: Reason.NON_FINITE,
        -math.inf: Reason.NON_FINITE,
        math.nan: Reason.NON_FINITE,
        1.0000001e15: Reason.OUT_OF_RANGE,
        -1e16: Reason.OUT_OF_RANGE,
    }
    for x, reason in cases.items():
        row, problem = parse(x)
        assert row is None and problem is not None and problem[0] == reason, x


def test_ints_and_non_numbers_take_the_full_check() -> None:
    assert parse(3) == ([3.0, float(category_key("a"))], None)
    row, problem = parse(True)
    assert row is None and problem is not None and problem[0] == Reason.WRONG_TYPE
    row, problem = parse("1.5")
    assert row is None and problem is not None and problem[0] == Reason.WRONG_TYPE


def test_remembered_keys_equal_fresh_ones() -> None:
    first = [category_key(v) for v in ("DE", 7, "7", "")]
    category_key.cache_clear()
    assert [category_key(v) for v in ("DE", 7, "7", "")] == first
    assert category_key(7) == category_key("7")  # an integer is keyed as its decimal string
