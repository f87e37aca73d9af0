"""Named points in the flow where tests inject faults (a crash, an exception).

Unarmed, ``hit`` is a dictionary miss. Only the composition root arms points (from the
``LEARND_TEST_FAILPOINT`` variable, for the crash tests); production code never does.

Examples
--------
>>> fp = Failpoints()
>>> fp.hit("after_poll")  # nothing armed: no effect
>>> seen = []
>>> fp = Failpoints({"after_learn": lambda: seen.append(1)})
>>> fp.hit("after_learn"); fp.hit("after_poll"); seen
[1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

POINTS = (
    "after_poll",
    "after_learn",
    "after_temp_write",
    "after_rename",
    "after_commit",
    "after_publish",
)
# Hit only with labels.mode = "join": after labels matched their features, before learning.
JOIN_POINTS = ("after_join",)


class Failpoints:
    def __init__(self, armed: Mapping[str, Callable[[], None]] | None = None):
        unknown = set(armed or ()) - {*POINTS, *JOIN_POINTS}
        if unknown:
            valid = ", ".join((*POINTS, *JOIN_POINTS))
            raise ValueError(f"unknown failpoints {sorted(unknown)}; valid: {valid}")
        self._armed = dict(armed or {})

    def hit(self, name: str) -> None:
        action = self._armed.get(name)
        if action is not None:
            action()


NONE = Failpoints()
