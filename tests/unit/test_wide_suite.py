"""bench/quality.py --suite: the wide suite's stream registry builds every stream with its
task's shapes, and learnd's runner learns a regression stream to a finite MAE."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

river = pytest.importorskip("river")

import _wide_streams  # noqa: E402
import quality  # noqa: E402


def test_every_stream_has_its_tasks_shapes():
    streams = _wide_streams.suite("new", 300)
    assert len(streams) >= 10
    assert len({s.name for s in streams}) == len(streams)
    for s in streams:
        assert s.X.dtype == np.float32 and s.X.ndim == 2 and len(s.X) == len(s.y) > 0, s.name
        assert np.isfinite(s.X).all(), s.name
        if s.task == "regression":
            assert s.labels is None and s.y.dtype == np.float32, s.name
        else:
            assert s.y.dtype == np.int64 and set(s.y.tolist()) <= set(range(len(s.labels)))
            assert s.task == ("binary" if len(s.labels) == 2 else "multiclass"), s.name
        assert all(0 < w < len(s.y) for w in s.switches), s.name
    tasks = {s.task for s in streams}
    assert tasks == {"binary", "multiclass", "regression"}


def test_streams_selects_by_name_and_rejects_unknown():
    picked = _wide_streams.suite("new", 200, only=("friedman",))
    assert len(picked) == 3 and all(s.name.startswith("Friedman") for s in picked)
    with pytest.raises(SystemExit):
        _wide_streams.suite("new", 200, only=("NoSuchStream",))


@pytest.mark.parametrize("behind", [False, True])
def test_learnd_regression_runner_returns_finite_mae(behind):
    s = _wide_streams.suite("new", 600, only=("Friedman",))[0]
    dt, errors, _alarms = quality.run_learnd_errors(s.X, s.y, None, behind=behind)
    assert dt > 0 and errors.shape == (len(s.y),)
    mae = float(np.mean(errors))
    assert np.isfinite(mae) and 0 < mae < float(np.abs(s.y - s.y.mean()).mean()) * 2
