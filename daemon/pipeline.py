"""The whole flow, top to bottom:

records -> validate (rejections to the dead-letter sink) -> micro-batch -> predict + score
(the learner and the served version, on the same events) -> learn -> drift check (and
reaction) -> freeze a candidate when due -> judge it on the next batch (daemon/gate.py) ->
publish it for serving.

Source positions advance as records are handed in; :meth:`Pipeline.flush` learns everything
pending so that ``positions`` then describes exactly what the model state reflects.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from learnd.daemon.config import LearndConfig
from learnd.daemon.drift.concept import DriftMonitor
from learnd.daemon.drift.inputs import InputDriftMonitor
from learnd.daemon.errors import StartupError
from learnd.daemon.events.batching import MicroBatcher
from learnd.daemon.events.decoder import Decoded, EventBatch, EventDecoder, Reason, Rejection
from learnd.daemon.events.record import RawRecord, Record
from learnd.daemon.events.typed import count_missing
from learnd.daemon.failpoints import NONE, Failpoints
from learnd.daemon.labels.rows import Unlabelled
from learnd.daemon.labels.stage import JoinStage
from learnd.daemon.learning.catch_up import ArrivalRate, CatchUpPace
from learnd.daemon.learning.challenger import Challenger
from learnd.daemon.learning.learner import Learner, StepResult
from learnd.daemon.learning.prequential import RollingMetrics
from learnd.daemon.ports import Clock, DeadLetterSink
from learnd.daemon.serving.publisher import Publisher
from learnd.daemon.serving.snapshot import SnapshotRef

log = logging.getLogger("learnd.pipeline")


class Pipeline:
    def __init__(
        self,
        cfg: LearndConfig,
        learner: Learner,
        dead_letters: DeadLetterSink,
        clock: Clock,
        ref: SnapshotRef | None = None,
        failpoints: Failpoints = NONE,
        wall: Clock = time.time,
    ):
        self.cfg = cfg
        self.learner = learner
        self.dead_letters = dead_letters
        self.clock = clock
        ref = (
            ref
            if ref is not None
            else SnapshotRef(keep=cfg.serving.keep_versions, spacing_s=cfg.serving.keep_spacing_s)
        )
        self.publisher = Publisher(cfg, ref, clock, failpoints)
        self.ref = ref
        self.failpoints = failpoints
        self.audit = np.zeros(0, np.int32) if cfg.checkpoint.audit_ids else None
        self.decoder = EventDecoder(cfg.schema_)
        lrn = cfg.learning
        self.batcher = MicroBatcher(lrn.batch_size, lrn.batch_max_age_s)
        self.arrivals = ArrivalRate()  # records reaching the log per second, for the pace
        self.pace = CatchUpPace(
            lrn.batch_size, lrn.catch_up_batch_size, lrn.catch_up_lag, lrn.catch_up_s
        )
        self.drift = DriftMonitor(cfg.learning.drift.detector)
        schema = cfg.schema_
        names = schema.feature_names or tuple(f"x{i}" for i in range(schema.dim))
        self.layout = schema.layout  # typed features: numbers, then category frequencies
        categories: tuple[tuple[str, int], ...] = ()
        if self.layout is not None:
            names = self.layout.numeric_names
            kinds = dict(self.layout.specs)
            categories = tuple(
                (t.name, t.columns[0])
                for t in self.layout.tables
                if kinds[t.name].type == "category"
            )
        self.missing: Counter[str] = Counter()  # missing values imputed, per declared feature
        self.input_drift = InputDriftMonitor(
            names, cfg.learning.drift.input_detector, categories=categories
        )
        ch = cfg.learning.drift.challenger
        self.challenger = Challenger(self._new_learner, ch) if ch.enabled else None
        self.metrics = RollingMetrics(cfg.schema_.task, cfg.learning.metrics_window)
        self.positions: dict[int, int] = {}
        self.valid = 0
        self.rejected: Counter[str] = Counter()
        self.batches = 0
        self.learn_failures = 0
        self._rollbacks_seen = 0
        self.alarms_at: deque[int] = deque(maxlen=1000)  # event positions of recent alarms
        self.lag = 0  # records not yet learned, all partitions (0: live, or no source)
        self.unlearned: dict[int, int] = {}  # records not yet learned, per partition
        self._source_lag: Mapping[int, int] = {}  # what the source has not handed over yet
        self._source_total = 0
        self.replay_failures = 0
        self.wall = wall  # the join's clock: pending rows keep their age across restarts
        self.join = JoinStage(cfg) if cfg.labels.mode == "join" else None

    def process(self, records: Sequence[RawRecord] | Decoded) -> None:
        """Hand in records as read, or as decoded already by the source (in its own process)."""
        joined: Sequence[RawRecord] = ()
        if self.join is not None and not isinstance(records, Decoded):
            records, joined = self.join.split(records)
        if not isinstance(records, Decoded):
            dec = self.decoder if self.join is None else self.join.decoder
            records = dec.decode(records)
        decoded = records
        events, rejections = decoded.events, decoded.rejections
        if self.join is not None:
            rejections = self._join(rejections, (*joined, *decoded.joined), decoded.unlabelled)
        for r in rejections:
            self.dead_letters.send(r.record, str(r.reason), r.detail)
            self.rejected[str(r.reason)] += 1
        self.valid += len(events)
        if self.layout is not None and len(events):
            self.missing.update(count_missing(self.layout, events.X))
        now = self.clock()
        self.batcher.add(events, now)
        self.pace_batches(self._source_total + len(self.batcher))
        batches = list(self.batcher.ready(now))
        waiting = len(self.batcher) + sum(len(b) for b in batches)
        lrn = self.learner
        for batch in batches:
            waiting -= len(batch)
            self.lag = self._source_total + waiting  # behind by this once the batch is learned
            self._learn(batch)
            # between batches too: a candidate frozen here is judged on the next one
            self.publisher.tick(
                self.clock(), lrn.events_learned, True, lrn.export, self.metrics.summary
            )
        self.positions.update(decoded.positions)
        self._count_unlearned()

    def _join(
        self,
        rejections: Sequence[Rejection],
        records: Sequence[RawRecord],
        rows: Unlabelled | None = None,
    ) -> list:
        """Unlabelled events (decoded, or among the decoder's rejections) and the join's own
        records go to the join; what it matched or expired into a label is batched to be
        learned."""
        join = self.join
        assert join is not None
        now, before = self.wall(), join.unlabelled
        if rows is not None:
            join.take_rows(rows, now)
        rest = join.take_unlabelled(rejections, now) + join.take_records(records, now)
        self.valid += join.unlabelled - before  # valid events, learned once their label comes
        batch, dead = join.take(now)
        for record, reason, detail in dead:
            self.dead_letters.send(record, reason, detail)
            self.rejected[reason] += 1
        if batch is not None:
            self.failpoints.hit("after_join")
            self.batcher.add(batch, self.clock())
        return rest

    def set_backlog(self, lag: Mapping[int, int] | int) -> None:
        """Tell the pipeline what the source has not handed over yet, per partition (or in
        all): with what waits in the micro-batcher, that is what is not yet learned
        (``unlearned``, ``lag``), from which rehearsal and catch-up batches are decided."""
        if isinstance(lag, Mapping):
            self._source_lag, self._source_total = dict(lag), sum(lag.values())
        else:
            self._source_lag, self._source_total = {}, int(lag)
        self._count_unlearned()

    def _count_unlearned(self) -> None:
        pending = self.batcher.pending_by_partition()
        source = self._source_lag
        self.unlearned = {
            p: source.get(p, 0) + pending.get(p, 0) for p in sorted({*source, *pending})
        }
        self.lag = self._source_total + len(self.batcher)

    def pace_batches(self, lag: int) -> None:
        """Choose how to learn from the lag (daemon/learning/catch_up.py); :meth:`process`
        does it at each call, a caller of :meth:`learn_arrays` before each batch."""
        self.arrivals.observe(self.clock(), self.learner.events_learned + lag)
        size = self.pace.choose(lag, self.arrivals.rate)[0]
        if size == self.batcher.size:
            return
        self.batcher.size = size
        log.info(
            "%s: lag %d, batches of %d",
            "catching up" if self.pace.catching_up else "caught up",
            lag,
            size,
            extra={"event": "catch_up", "lag": lag, "batch_size": size},
        )

    def learn_arrays(self, X: np.ndarray, y: np.ndarray) -> None:
        """Learn already-validated arrays as one micro-batch, exactly as decoded events are
        learned (guards, metrics, drift detection and reaction, the gate's window): for
        benchmarks and embedding, without Kafka records or positions."""
        n = len(y)
        batch = EventBatch(
            np.ascontiguousarray(X, np.float32),
            np.asarray(y),
            (None,) * n,
            np.zeros(n, np.int32),
            np.arange(n, dtype=np.int64),
        )
        self._learn(batch)

    def tick(self) -> None:
        """Learn a partial batch that has waited long enough; judge a candidate that no next
        batch will judge (the stream stopped); freeze a candidate when due."""
        if self.join is not None:
            self._join([], ())  # expiry
        now = self.clock()
        for batch in self.batcher.ready(now):
            self._learn(batch)
        self._count_unlearned()
        lrn = self.learner
        self.publisher.tick(
            now, lrn.events_learned, bool(len(self.batcher)), lrn.export, self.metrics.summary
        )

    def publish(self) -> None:
        """Freeze the current model as a candidate now (see :class:`Publisher`)."""
        lrn = self.learner
        self.publisher.freeze(lrn.events_learned, lrn.export, self.metrics.summary)

    def flush(self) -> None:
        for batch in self.batcher.drain():
            self._learn(batch)
        self._count_unlearned()

    def _learn(self, batch: EventBatch) -> None:
        started = self.clock()
        result = self._step(batch)
        if result is None:  # the batch held a poison pill: learned event by event instead
            for i in range(len(batch)):
                self._learn_one(batch.slice(i, i + 1))
            return
        rehearsed = self._after_step(batch, result)
        self.pace.observe(len(batch), rehearsed, self.clock() - started)

    def _step(self, batch: EventBatch) -> StepResult | None:
        """One learning step, retried ``learn_retries`` times; None if it keeps raising."""
        for attempt in range(self.cfg.learning.learn_retries + 1):
            try:
                return self.learner.learn_many(batch.X, batch.y)
            except Exception as e:  # noqa: BLE001 - any failure of a step is handled the same way
                self.learn_failures += 1
                log.warning(
                    "learning step failed (attempt %d): %s: %s",
                    attempt + 1,
                    type(e).__name__,
                    e,
                    extra={"event": "learn_failed"},
                )
        return None

    def _learn_one(self, event: EventBatch) -> None:
        result = self._step(event)
        if result is not None:
            self._after_step(event, result)
            return
        record = Record(
            self.cfg.kafka.topic, int(event.partitions[0]), int(event.offsets[0]), event.raw[0]
        )
        detail = f"the learning step raised {self.cfg.learning.learn_retries + 1} times"
        self.dead_letters.send(record, Reason.LEARN_FAILED.value, detail)
        self.rejected[Reason.LEARN_FAILED.value] += 1
        self.valid -= 1

    def _after_step(self, batch: EventBatch, result: StepResult) -> bool:
        """Everything after a learning step; returns whether rehearsal followed it."""
        start = self.learner.events_learned - len(batch)
        if self.learner.rollbacks != self._rollbacks_seen:
            self._rollbacks_seen = self.learner.rollbacks
            log.error(
                "loss exploded or weights went non-finite: rolled back to the last good state",
                extra={"event": "rollback", "rollbacks": self.learner.rollbacks},
            )
        self.batches += 1
        if self.audit is not None:
            self.audit = _audit(self.audit, batch)
        self.failpoints.hit("after_learn")
        self.metrics.update(result.outputs, batch.y)
        # a backlog (whatever the catch-up rung): the publish path gets a budget
        lrn = self.cfg.learning
        self.publisher.behind = self.lag > (lrn.catch_up_lag or lrn.replay.max_lag)
        self.publisher.observe(batch.X, batch.y, result.outputs)
        self.input_drift.update(batch.X, start)
        alarms = self.drift.update_many(result.errors, start)
        for at in alarms:
            log.warning(
                "drift alarm",
                extra={"event": "drift_alarm", "at_event": at, "detector": self.drift.name},
            )
            self.learner.on_drift()
            self.publisher.on_drift(at)
            self.alarms_at.append(at)
            log.info(
                "drift reaction: learning rate boosted",
                extra={
                    "event": "drift_reaction",
                    "lr": self.learner.lr,
                    "optimizer_reset": self.cfg.learning.drift.reset_optimizer,
                },
            )
        rehearse = self.keeping_up
        if self.challenger is not None:
            self._challenge(batch, result, start, alarms, rehearse)
        if rehearse:
            self._rehearse()
        return rehearse

    def _rehearse(self) -> None:
        """Rehearsal steps; one that raises is logged and counted, never retried: the batch
        itself is learned already, and rehearsal resumes with the next one."""
        try:
            self.learner.replay()
        except Exception as e:  # noqa: BLE001 - any failure of a rehearsal step is handled alike
            self.replay_failures += 1
            log.warning(
                "rehearsal step failed: %s: %s",
                type(e).__name__,
                e,
                extra={"event": "replay_failed"},
            )

    @property
    def keeping_up(self) -> bool:
        """Whether the lag (records not yet learned) leaves compute to spare for rehearsal:
        while catching up, as the pace says (daemon/learning/catch_up.py); else up to
        ``learning.replay.max_lag`` (``refill_max_lag`` while the replay window refills), and
        beyond it while learning with rehearsal keeps the catch-up pace."""
        if self.pace.catching_up:
            return self.pace.rung[1]
        if self.lag <= self.cfg.learning.replay.lag_limit(self.learner.refilling):
            return True
        return self.pace.rehearsal_keeps_pace(self.lag, self.arrivals.rate)

    def replay_steps(self) -> int:
        """Rehearsal steps per micro-batch now: none while behind the log."""
        return self.learner.rehearsal_steps() if self.keeping_up else 0

    def _new_learner(self) -> Learner:
        return Learner(self.cfg.schema_, self.cfg.model, self.cfg.learning, self.learner.device)

    def _challenge(
        self, batch: EventBatch, result: StepResult, start: int, alarms: list[int], rehearse: bool
    ) -> None:
        """Run the background challenger: start it on a warning (or an alarm), train it beside
        the incumbent, promote or drop it."""
        ch = self.challenger
        assert ch is not None
        warnings = ch.warn(result.errors, start)
        for at in warnings:
            log.info("drift warning", extra={"event": "drift_warning", "at_event": at})
        if ch.learner is not None:
            outcome = ch.observe(batch.X, batch.y, result.errors, rehearse)
            if outcome is None:
                return
            incumbent_err, challenger_err = ch.errors()
            if outcome == "promote":
                self.learner.adopt(ch.learner)
            ch.finish(promoted=outcome == "promote", at=self.learner.events_learned)
            log.warning(
                "challenger %s",
                "promoted: it now serves" if outcome == "promote" else "dropped",
                extra={
                    "event": "challenger_" + ("promoted" if outcome == "promote" else "dropped"),
                    "started_at_event": ch.started_at,
                    "events": ch.seen,
                    "challenger_error": challenger_err,
                    "incumbent_error": incumbent_err,
                },
            )
            return
        if warnings or alarms:
            challenger = self._new_learner()
            # It starts from what the inputs look like now, not from nothing.
            challenger.x_scaler.load_state_dict(self.learner.x_scaler.state_dict())
            challenger.y_scaler.load_state_dict(self.learner.y_scaler.state_dict())
            at = (warnings or alarms)[0]
            ch.start(challenger, at)
            log.info("challenger started", extra={"event": "challenger_started", "at_event": at})

    def state_dict(self) -> dict[str, Any]:
        """Everything a restart needs; call :meth:`flush` first so positions match the model."""
        if len(self.batcher):
            raise RuntimeError("state_dict() with events pending: call flush() first")
        return {
            "format": 1,
            "schema": self._schema_key(),
            "model": self.cfg.model.model_dump(mode="json"),
            "learner": self.learner.state_dict(),
            "drift": self.drift.state_dict(),
            "input_drift": self.input_drift.state_dict(),
            **({"challenger": self.challenger.state_dict()} if self.challenger else {}),
            "positions": dict(self.positions),
            "next_version": self.publisher.restart_version,
            "serving": self.publisher.state_dict(),
            "valid": self.valid,
            "rejected": dict(self.rejected),
            **({"audit": self.audit.copy()} if self.audit is not None else {}),
            **({"labels": self.join.state_dict()} if self.join is not None else {}),
        }

    def _schema_key(self) -> dict[str, Any]:
        """What a checkpoint must have been written for (typed: every feature's declaration)."""
        schema = self.cfg.schema_
        key = {
            "task": schema.task,
            "dim": schema.dim,
            "classes": list(map(str, schema.class_values)),
        }
        return key if self.layout is None else {**key, "features": self.layout.describe()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        want = self._schema_key()
        if state["schema"] != want or state["model"] != self.cfg.model.model_dump(mode="json"):
            raise StartupError(
                f"checkpoint was written for schema {state['schema']} and model {state['model']}; "
                f"the config says {want} and {self.cfg.model.model_dump(mode='json')}. Point "
                "checkpoint.dir elsewhere to start a new model."
            )
        self.learner.load_state_dict(state["learner"])
        self.drift.load_state_dict(state["drift"])
        if "input_drift" in state:  # older checkpoints: the monitors start empty
            self.input_drift.load_state_dict(state["input_drift"])
        if self.challenger is not None and "challenger" in state:
            self.challenger.load_state_dict(state["challenger"])
        self.positions = {int(p): int(o) for p, o in state["positions"].items()}
        self.publisher.load_state_dict(state.get("serving", {}))
        self.publisher.continue_from(int(state["next_version"]), int(state.get("skipped_newer", 0)))
        self.valid = int(state["valid"])
        self.rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})
        if self.audit is not None and "audit" in state:
            self.audit = np.asarray(state["audit"], np.int32).copy()
        if self.join is not None and "labels" in state:
            self.join.load_state_dict(state["labels"])


def _audit(counts: np.ndarray, batch: EventBatch) -> np.ndarray:
    """Add one to the count of every integer id in ``batch`` (growing ``counts`` as needed)."""
    ids = np.array([i for i in batch.ids if isinstance(i, int) and i >= 0], np.int64)
    if len(ids) == 0:
        return counts
    if ids.max() >= len(counts):
        grown = np.zeros(max(int(ids.max()) + 1, 2 * len(counts)), np.int32)
        grown[: len(counts)] = counts
        counts = grown
    np.add.at(counts, ids, 1)
    return counts
