"""Which shared-memory segments a starting daemon removes: only its own state's, only those of
daemons that are gone."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from learnd.adapters.serving.segments import (
    create_segment,
    remove_segment,
    remove_stale_segments,
    segment_prefix,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_segments_of_this_scope_whose_creator_is_gone_are_removed(tmp_path):
    scope, other = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    dead, alive = _dead_pid(), os.getppid()
    names = {
        "dead": segment_prefix(scope, dead) + "00aa",
        "same_pid_not_ours": segment_prefix(scope) + "00bb",  # a predecessor with our pid
        "alive": segment_prefix(scope, alive) + "00cc",
        "other_scope": segment_prefix(other, dead) + "00dd",
        "not_learnd": f"somebody_{scope}_{dead}_00ee",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x" * 100)
    ours = create_segment(scope, 64)  # made by this process: kept
    (tmp_path / ours.name).write_bytes(b"x")
    try:
        removed = remove_stale_segments(scope, tmp_path)
    finally:
        remove_segment(ours)
    assert sorted(removed) == sorted([names["dead"], names["same_pid_not_ours"]])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names["alive"], names["other_scope"], names["not_learnd"], ours.name}
