"""What a checkpoint says, as plain data: where each partition resumes, the counters, and the
exactly-once audit (``checkpoint.audit_ids``: how often each integer event id was learned).

Examples
--------
>>> import numpy as np
>>> state = {"format": 1, "positions": {0: 3, 1: 2}, "valid": 4, "rejected": {"not_json": 1},
...          "next_version": 7, "learner": {"events_learned": 4, "steps": 2, "rollbacks": 0},
...          "audit": np.array([1, 1, 0, 2], np.int32)}
>>> s = summarize(state)
>>> s["positions"], s["records"]
({'0': 3, '1': 2}, 5)
>>> s["audit"]["applied_once"], s["audit"]["never"], s["audit"]["more_than_once"]
(2, 1, 1)
>>> audit_summary(state["audit"], ids=6)["never"], audit_summary([1, 1], ids=2)["ok"]
(3, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def summarize(state: Mapping[str, Any], ids: int | None = None) -> dict[str, Any]:
    """Positions, counters and the audit summary of a checkpoint's state (as loaded); ``ids``:
    see :func:`audit_summary`."""
    learner = state.get("learner", {})
    rejected = {str(k): int(v) for k, v in dict(state.get("rejected", {})).items()}
    positions = {str(p): int(o) for p, o in sorted(dict(state.get("positions", {})).items())}
    out: dict[str, Any] = {
        "id": state.get("id"),
        "format": state.get("format"),
        "positions": positions,
        "records": int(state.get("valid", 0)) + sum(rejected.values()),
        "valid": int(state.get("valid", 0)),
        "rejected": rejected,
        "events_learned": int(learner.get("events_learned", 0)),
        "steps": int(learner.get("steps", 0)),
        "rollbacks": int(learner.get("rollbacks", 0)),
        "next_version": state.get("next_version"),
        "schema": state.get("schema"),
    }
    out["audit"] = audit_summary(state["audit"], ids) if "audit" in state else None
    return out


def audit_summary(counts: Any, ids: int | None = None) -> dict[str, Any]:
    """How often each id was learned. The ids expected are 0..``ids``-1, or, without ``ids``,
    0 up to the highest id learned; ``ok`` when each of them was learned exactly once and no
    other id at all."""
    c = np.asarray(counts, np.int64)
    seen = np.flatnonzero(c)
    highest = int(seen[-1]) if len(seen) else -1
    n = highest + 1 if ids is None else ids
    expected = np.zeros(n, np.int64)
    expected[: min(n, len(c))] = c[:n]
    twice = np.flatnonzero(c > 1)
    never = np.flatnonzero(expected == 0)
    beyond = int((c[n:] > 0).sum())
    return {
        "expected_ids": n,
        "highest_id": highest,
        "applied_once": int((expected == 1).sum()),
        "never": len(never),
        "more_than_once": len(twice),
        "beyond_expected": beyond,
        "max_count": int(c.max()) if len(c) else 0,
        "ids_more_than_once": [int(i) for i in twice[:20]],
        "ids_never": [int(i) for i in never[:20]],
        "ok": len(never) == 0 and len(twice) == 0 and beyond == 0,
    }
