"""The learning sections of learnd's config: drift, challenger, rehearsal, gate, compression.

``LearndConfig`` (in ``learnd.daemon.config``) holds them under ``learning`` and
``compression``; import them from there. Every section rejects unknown keys, and a string
literal after a field is its description (``docs/configuration.md`` is generated from them).

Examples
--------
>>> LearningConfig().replay.lag_limit(refilling=True)
3000
>>> CompressionConfig(forms=("int8",)).forms
('int8',)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Device = Literal["auto", "cpu", "cuda"]


class Section(BaseModel):
    """A config section: frozen, unknown keys rejected, field docstrings as descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ChallengerConfig(Section):
    """A background model trained from a drift warning on, which takes over when it is better
    (see docs/design.md, "Challenger"). ``max_events`` must be at least ``window``."""

    enabled: bool = True
    """On a drift warning (or an alarm with none before it), train a fresh model beside the
    incumbent and let it take over when it is better."""
    warning_delta: float = Field(0.01, gt=0, lt=1)
    """ADWIN delta of the warning detector, on the same error stream: more sensitive than the
    drift detector's 0.002 (river's ARF pairs warning 0.01 with drift 0.001)."""
    window: int = Field(1000, ge=10, le=1_000_000)
    """Events over which challenger and incumbent errors are compared."""
    margin: float = Field(0.01, ge=0, le=1)
    """The challenger takes over once its error over ``window`` is below the incumbent's by more
    than this (accuracy points; for regression a fraction of the incumbent's MAE)..."""
    recent_share: float = Field(0.25, gt=0, le=1)
    """... and over this newest share of the window it is no worse than the incumbent (an
    incumbent that has re-learned the new concept keeps serving)."""
    max_events: int = Field(5_000, ge=10)
    """Dropped, and its compute freed, after this many events without winning."""

    @model_validator(mode="after")
    def _window_fits(self) -> ChallengerConfig:
        if self.max_events < self.window:
            raise ValueError(
                f"learning.drift.challenger.max_events ({self.max_events}) is below its window "
                f"({self.window}): a challenger could never be judged; set max_events >= window"
            )
        return self


class DriftConfig(Section):
    """Concept drift (a rise in the per-event error), input drift, and the reaction to an alarm."""

    detector: Literal["adwin", "page_hinkley", "kswin", "none"] = "adwin"
    """The concept-drift detector (river's) on the per-event error; only a rise is drift."""
    input_detector: Literal["adwin", "page_hinkley", "kswin", "none"] = "adwin"
    """Input drift: one detector per feature (the first 64) on each micro-batch's mean, reported
    apart from concept drift (``learnd_input_drift_alarms_total{feature}``, log event
    ``input_drift``) and reacted to by nothing."""
    lr_boost: float = Field(3.0, ge=1.0, le=100.0)
    """At a concept-drift alarm the learning rate is multiplied by this..."""
    boost_half_life_steps: int = Field(200, ge=1)
    """... and decays back to the base rate with this half-life, in learning steps."""
    reset_optimizer: bool = False
    """Also forget the optimizer's moments at an alarm."""
    challenger: ChallengerConfig = ChallengerConfig()


class ReplayConfig(Section):
    """Rehearsal of recently learned events while the learner keeps up (daemon/learning/replay_window.py).

    After each micro-batch, extra optimizer steps are taken on batches drawn from the last
    ``window`` learned events, while the consumer lag is at most ``max_lag`` records or the
    learner, rehearsing, still keeps the catch-up pace: compute it has to spare, given back as
    soon as it falls behind faster than that. While
    the window refills (from the start, and after a drift alarm or a rollback empties it) it
    takes ``refill_steps_per_batch``, once full ``steps_per_batch``, and rehearses up to a lag of
    ``refill_max_lag``. The window is part of the checkpoint. Chosen with bench/quality.py (see
    docs/design.md, "Rehearsal").
    """

    steps_per_batch: int = Field(3, ge=0, le=32)
    """Rehearsal steps after each micro-batch once the window is full; ``0`` turns rehearsal off."""
    refill_steps_per_batch: int = Field(8, ge=0, le=32)
    """Rehearsal steps after each micro-batch while the window refills."""
    window: int = Field(1000, ge=1, le=1_000_000)
    """Recently learned events rehearsed (emptied at a drift alarm and at a rollback)."""
    max_lag: int = Field(1000, ge=0)
    """Rehearse after every micro-batch while the consumer lag is at most this many records;
    beyond it, only while learning with rehearsal (its rate as measured) still meets the
    catch-up target ``arriving + lag / learning.catch_up_s`` events/s (never with
    ``learning.catch_up_lag`` none)."""
    refill_max_lag: int = Field(3000, ge=0)
    """While the window refills, rehearse up to this lag: headroom kept for a young model and a
    new concept, as under load the lag hovers at ``max_lag``. Below ``max_lag`` counts as
    ``max_lag``."""

    def lag_limit(self, refilling: bool) -> int:
        """The largest consumer lag at which rehearsal goes on."""
        return max(self.max_lag, self.refill_max_lag) if refilling else self.max_lag


class GateConfig(Section):
    """The publish gate (see daemon/serving/gate.py): a candidate is judged on events it has not
    trained on, against the served version on the same events, and published at once."""

    enabled: bool = True
    """Publish through the gate; ``false``: publish every copy that is finite (needs
    ``compression.enabled: false``)."""
    window: int = Field(2000, ge=10, le=1_000_000)
    """The evidence window: the learner's test-then-train predictions over the last ``window``
    events (and its newest quarter) must be no worse than the anchor's, the version served when
    the evidence began, before a candidate may be published; nothing waits for it to fill
    again. With 30% flipped labels a model 8 points worse measures only ~3 points worse: 500
    events let such models through, 2,000 do not."""
    tolerance: float = Field(0.005, ge=0, le=1)
    """How much worse than the served model a candidate may score: accuracy points (0.005 = 0.5
    points) for classification, a fraction of the served MAE for regression."""


CompressionForm = Literal["numpy", "torch", "prune", "prune-units", "int8", "fp16", "bf16"]


class CompressionConfig(Section):
    """Compressed copies for serving (see daemon/serving/compress.py), checked on the gate's window.
    Needs the gate (``learning.gate.enabled``)."""

    enabled: bool = True
    """Serve a compressed form when one is faster and as good (docs/protocol.md)."""
    forms: tuple[CompressionForm, ...] = ("prune-units", "int8", "fp16")
    """Forms tried at each publish besides the plain numpy copy. The fastest at batch 1 that
    scores within ``tolerance`` of the plain copy is served. CUDA-only forms (``fp16``,
    ``bf16``; ``int8`` runs through torchao on CUDA where it works, else on the CPU) are skipped,
    and counted as unavailable, without a GPU."""
    prune_amount: float = Field(0.5, gt=0, lt=1)
    """``prune``: share of all weights zeroed (global magnitude pruning)."""
    units_amount: float = Field(0.25, gt=0, lt=1)
    """``prune-units``: share of each hidden layer's units removed."""
    tolerance: float = Field(0.005, ge=0, le=1)
    """Accuracy points (0.005 = 0.5) a form may lose against the plain copy on the gate's
    window; for regression a fraction of the plain copy's MAE."""
    min_speedup: float = Field(1.1, ge=1.0)
    """A form replaces the plain copy only if this much faster at batch 1 (timing noise)."""
    after_drift_events: int = Field(5000, ge=0)
    """No compression for this many events after a drift alarm: the plain copy is served while
    the model recovers."""


class LinearMemberConfig(Section):
    """A linear model learned beside the MLP on the same micro-batches, test-then-train (see
    docs/design.md, "A linear member"). The member with the lower recent prequential error
    predicts and is served; with ``model.kind: linear`` there is none."""

    enabled: bool = True
    """Learn the linear member, and serve it while its recent error is the lower."""
    half_life_events: int = Field(500, ge=1, le=1_000_000)
    """Half-life, in events, of each member's exponentially weighted prequential error (0/1
    error, or absolute error for regression)."""
    margin: float = Field(0.02, ge=0, lt=1)
    """The other member takes over once its weighted error is below the serving member's by
    more than this share of it (no flapping between members that do equally well)."""
    min_events: int = Field(200, ge=0)
    """Events scored by both members before either may take over (also after loading a
    checkpoint written without the member)."""


class LearningConfig(Section):
    """How the model learns: device, optimizer, micro-batches, averaging, publishing, guards.
    ``catch_up_batch_size`` must be at least ``batch_size`` unless ``catch_up_lag`` is none."""

    device: Device = "auto"
    """``auto``: CUDA if available and the model has at least 100k parameters (below that a CUDA
    step is slower than a CPU one, docs/design.md), else CPU. ``cuda`` fails start-up without a
    GPU."""
    threads: int = Field(1, ge=1, le=256)
    """torch CPU threads."""
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    """The optimizer (Adam and AdamW use the fused kernel where the build has it)."""
    lr: float = Field(0.01, gt=0, le=10)
    """Base learning rate (chosen with bench/quality.py: mean prequential accuracy over seven
    streams .891 against .817 at 1e-3 and .869 at 3e-3, at the same speed)."""
    weight_decay: float = Field(0.0, ge=0)
    """Weight decay. ``0.0001`` keeps one network plastic over hundreds of new concepts where the
    challenger is off or does not win (docs/design.md, "Plasticity"); the defaults need none."""
    batch_size: int = Field(32, ge=1, le=65_536)
    """Micro-batch size."""
    catch_up_lag: int | None = Field(10_000, ge=1)
    """Once more than this many records are not yet learned (``learnd_consumer_lag``), catch up:
    batches grow from ``batch_size`` (doubling, one step at a time, up to
    ``catch_up_batch_size``) while the rate measured falls short of ``lag / catch_up_s`` events/s,
    and shrink again as the lag falls; back to ``batch_size`` once the lag is below half of it
    (docs/operations.md, "Catching up"). None: always ``batch_size``."""
    catch_up_batch_size: int = Field(256, ge=1, le=65_536)
    """The largest micro-batch while catching up (``learnd_batch_size``)."""
    catch_up_s: float = Field(30.0, gt=0, le=86_400)
    """The catch-up preference: behind by ``lag`` records, learn at least ``lag / catch_up_s``
    events per second (a backlog shrinks by about two thirds every ``catch_up_s`` seconds).
    Smaller: faster catch-up in larger batches; larger: smaller batches, more accurate."""
    steps_per_batch: int = Field(1, ge=1, le=16)
    """Optimizer steps per micro-batch, the first on the batch's test-then-train forward pass
    (more: better per-example accuracy, proportionally slower)."""
    average_decay: float = Field(0.8, ge=0, lt=1)
    """The model that predicts and is served is an exponential moving average of the weights,
    folded in once per micro-batch with this decay (daemon/learning/averaging.py); it restarts at a drift
    alarm, a rollback and a promotion. ``0``: the newest weights."""
    batch_max_age_s: float = Field(0.2, gt=0, le=60)
    """A partial micro-batch is learned once it is this old."""
    metrics_window: int = Field(1000, ge=10, le=1_000_000)
    """Events in the rolling prequential metrics."""
    publish_every_s: float = Field(0.02, gt=0)
    """How often a candidate is frozen; it is judged on the next batch, which it has not trained
    on, and published at once if it passes (daemon/serving/gate.py): what is learned is served
    within about this long plus one batch."""
    publish_every_events: int | None = Field(None, ge=1)
    """Also publish after this many learned events."""
    publish_budget: float = Field(0.03, gt=0, le=1)
    """While behind the log by a backlog (lag above ``learning.catch_up_lag``, or
    ``learning.replay.max_lag`` when that is none), the share of the
    learning thread's time the publish path may take: scoring the served version on each batch,
    the gate, freezing, compressing and publishing candidates. Batches beyond it are learned
    without being scored (counted in ``learnd_publish_unscored_batches_total``); keeping up,
    every batch is scored. 1 turns the budget off (daemon/serving/budget.py)."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms(True)``: a restarted run equals a straight one."""
    drift: DriftConfig = DriftConfig()
    replay: ReplayConfig = ReplayConfig()
    gate: GateConfig = GateConfig()
    linear_member: LinearMemberConfig = LinearMemberConfig()
    loss_explosion_factor: float = Field(100.0, gt=1)
    """A step whose loss exceeds this multiple of the running average is a bad step (unless
    the last good state does as badly on the same batch: then the data changed)."""
    rollback_after_bad_steps: int = Field(3, ge=1)
    """Bad steps in a row before the learner rolls back to its last good state (non-finite
    weights: at once)."""
    good_state_every_steps: int = Field(500, ge=1)
    """How often the last good state is refreshed."""
    learn_retries: int = Field(2, ge=0, le=10)
    """Retries of a step that raises; then the batch is learned event by event, and an event that
    still raises is dead-lettered (``learn_failed``)."""

    @model_validator(mode="after")
    def _catch_up(self) -> LearningConfig:
        if self.catch_up_lag is not None and self.catch_up_batch_size < self.batch_size:
            raise ValueError(
                f"learning.catch_up_batch_size ({self.catch_up_batch_size}) is below "
                f"learning.batch_size ({self.batch_size}); set it >= batch_size or set "
                "learning.catch_up_lag to null"
            )
        return self
