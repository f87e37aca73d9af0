"""The daemon's main loop over its ports: poll, process, checkpoint, commit; stop cleanly.

Checkpoints hold the model state and the source positions it reflects; the source's own
committed offsets are written after each checkpoint for monitoring only, and on start the
source is sought to the checkpointed positions (never the other way round).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from learnd.daemon.config import CheckpointConfig
from learnd.daemon.failpoints import NONE, Failpoints
from learnd.daemon.pipeline import Pipeline
from learnd.daemon.ports import CheckpointStore, Clock, EventSource

log = logging.getLogger("learnd.service")


@dataclass
class Health:
    """What the daemon knows about itself; read by health requests and metrics."""

    alive: bool = True
    consuming: bool = False
    broker_connected: bool = False  # until a poll proves otherwise
    assigned: int = 0
    ever_assigned: bool = False
    checkpoint_failures: int = 0
    checkpoint_failing: bool = False
    checkpoints: int = 0
    last_checkpoint_unix: float = 0.0
    restored_from: str | None = None
    progress: Callable[[], dict] | None = None

    def as_dict(self) -> dict:
        problems = []
        if self.ever_assigned and self.assigned == 0:
            problems.append("no partitions assigned")
        if not self.broker_connected:
            problems.append("broker unreachable")
        if self.checkpoint_failing:
            problems.append("checkpoints failing")
        if not self.consuming or not self.ever_assigned:
            status = "starting"
        elif problems:
            status = "degraded"
        else:
            status = "ready"
        ready = self.consuming and self.broker_connected and self.assigned > 0
        out = {"alive": self.alive, "ready": ready, "status": status, "problems": problems}
        return {**out, **self.progress()} if self.progress is not None else out


class Service:
    def __init__(
        self,
        pipeline: Pipeline,
        source: EventSource,
        store: CheckpointStore,
        checkpoint: CheckpointConfig,
        clock: Clock = time.monotonic,
        poll_timeout_s: float = 0.1,
        failpoints: Failpoints = NONE,
    ):
        self.pipeline = pipeline
        self.source = source
        self.store = store
        self.policy = checkpoint
        self.clock = clock
        self.poll_timeout_s = poll_timeout_s
        self.failpoints = failpoints
        self.health = Health()
        self.health.progress = lambda: {"events_learned": pipeline.learner.events_learned}
        self.stop_event = threading.Event()
        self._ckpt_events = 0
        self._ckpt_time = clock()
        self._broker_seen: bool | None = None  # None until the first poll
        source.on_revoke(self._hand_over)

    def restore(self) -> None:
        """Load the newest good checkpoint (if any), seek the source, reserve version numbers
        in a checkpoint of its own, and serve what was served before (a new model: its first
        version)."""
        self.pipeline.publisher.bound_versions()
        state = self.store.load_latest()
        if state is not None:
            self.pipeline.load_state_dict(state)
            self.source.seek(self.pipeline.positions)
            self.health.restored_from = str(state.get("id", "checkpoint"))
            log.info(
                "restored from checkpoint",
                extra={
                    "event": "restore",
                    "positions": self.pipeline.positions,
                    "events_learned": self.pipeline.learner.events_learned,
                },
            )
        reserved = self.checkpoint(commit=False)
        if not self.pipeline.publisher.serve_restored(
            reserved, self.pipeline.learner.events_learned
        ):
            self.pipeline.publish()  # a new model: its untrained first version

    def run(self) -> None:
        """Poll and learn until :meth:`stop`; then finish the batch, checkpoint and commit."""
        try:
            while not self.stop_event.is_set():
                self.step()
        finally:
            self.checkpoint()
            self.source.close()
            self.health.consuming = False

    def step(self) -> None:
        records = self.source.poll(self.poll_timeout_s)
        if records:
            self.failpoints.hit("after_poll")
        self.health.consuming = True
        self.health.assigned = self.source.assigned()
        self.health.ever_assigned = self.health.ever_assigned or self.health.assigned > 0
        was = self.health.broker_connected
        now = self.health.broker_connected = bool(records) or self.source.connected()
        if now != was or self._broker_seen is None:
            self._log_broker(now)
        self.pipeline.set_backlog(self.source.lag())
        if records:
            self.pipeline.process(records)
        self.pipeline.tick()
        if self.source.take_revoked() or self._checkpoint_due():
            self.checkpoint()  # after a revocation: record what the model reflects at once

    def _log_broker(self, connected: bool) -> None:
        """The first poll says whether the broker is reachable at start (a warning only when it
        is not); later changes are warnings both ways."""
        first = self._broker_seen is None
        if connected:
            if first:
                log.info("broker reachable", extra={"event": "broker_up"})
            else:
                log.warning("broker reachable again", extra={"event": "broker_up"})
        else:
            log.warning(
                "broker %s; retrying",
                "unreachable at start" if first else "unreachable",
                extra={"event": "broker_down"},
            )
        self._broker_seen = connected

    def stop(self) -> None:
        self.stop_event.set()

    def _checkpoint_due(self) -> bool:
        learned = self.pipeline.valid + sum(self.pipeline.rejected.values())
        return (
            self.pipeline.publisher.wants_checkpoint
            or learned - self._ckpt_events >= self.policy.every_events
            or self.clock() - self._ckpt_time >= self.policy.every_s
        )

    def _hand_over(self) -> Mapping[int, int] | None:
        """Partitions are being revoked: checkpoint now, before another member takes them, and
        give the source the positions to commit (it commits them itself, mid-rebalance)."""
        if not self.checkpoint(commit=False):
            return None
        return dict(self.pipeline.positions)

    def checkpoint(self, commit: bool = True) -> bool:
        """Learn what is pending, make dead letters durable, save state, then commit offsets."""
        self._ckpt_time = self.clock()
        self.pipeline.flush()
        self._ckpt_events = self.pipeline.valid + sum(self.pipeline.rejected.values())
        if not self.pipeline.learner.is_finite():
            self.health.checkpoint_failures += 1
            self.health.checkpoint_failing = True
            log.error("model is not finite; checkpoint skipped", extra={"event": "checkpoint"})
            return False
        try:
            self.pipeline.dead_letters.flush()
            state = self.pipeline.state_dict()
            ident = self.store.save(state)
        except OSError as e:
            self.health.checkpoint_failures += 1
            self.health.checkpoint_failing = True
            log.error("checkpoint failed: %s", e, extra={"event": "checkpoint"})
            return False
        self.pipeline.publisher.reserve_versions(int(state["next_version"]))
        self.health.checkpoints += 1
        self.health.checkpoint_failing = False
        self.health.last_checkpoint_unix = time.time()
        if commit:
            self.source.commit(self.pipeline.positions)
        self.failpoints.hit("after_commit")
        log.info(
            "checkpoint written",
            extra={
                "event": "checkpoint",
                "id": ident,
                "positions": dict(self.pipeline.positions),
                "served_version": state["serving"]["served"],
            },
        )
        return True
