"""A share of the learning thread's time for the publish path, while behind the log.

Keeping up with the log, the learning thread waits for events most of the time, so the publish
path (scoring the served version on each batch, the gate, freezing, compressing and publishing
candidates) costs no events/s and runs on every batch. Behind the log, every millisecond it
takes is a millisecond not spent learning the backlog: there it gets at most ``share`` of the
time, earned as wall time passes (``share`` seconds per second, up to ``burst`` seconds held),
and batches beyond it are learned without being scored by the served version. The served
metrics and the gate's evidence then come from the batches that were scored: a sample taken by
time, not by content.

Examples
--------
>>> b = PublishBudget(share=0.1, burst=0.01)
>>> b.affords(now=0.0, behind=True)      # starts with a full burst
True
>>> b.spend(0.02)                        # a publish that took 20 ms
>>> b.credit                            # owed, down to one burst at most
-0.01
>>> b.affords(now=0.05, behind=True)     # 5 ms earned back: still 5 ms short
False
>>> b.affords(now=0.2, behind=True)      # back in credit (held up to one burst)
True
>>> b.affords(now=0.2, behind=False)     # keeping up: always
True
"""

from __future__ import annotations


class PublishBudget:
    def __init__(self, share: float, burst: float = 0.05):
        self.share = share
        self.burst = burst
        self.credit = burst  # seconds of publish work allowed now
        self._at: float | None = None
        self.skipped = 0  # batches learned behind the log without being scored

    def affords(self, now: float, behind: bool) -> bool:
        """Whether the publish path may work now; earns credit for the time since last asked."""
        if self._at is not None and now > self._at:
            self.credit = min(self.burst, self.credit + self.share * (now - self._at))
        self._at = now
        return not behind or self.share >= 1.0 or self.credit > 0.0

    def spend(self, seconds: float) -> None:
        """The publish path worked ``seconds``. Charged whether behind or not, and owed down to
        one ``burst``: falling behind starts from what keeping up spent last, never from a debt
        that a long stretch of keeping up ran up."""
        self.credit = max(-self.burst, self.credit - max(0.0, seconds))
