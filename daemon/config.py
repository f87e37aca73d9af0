"""learnd's one frozen, typed configuration.

Every section rejects unknown keys, and contradictory values fail validation with a message
that names the field and its valid values. This module only *describes* the config; reading
files, the environment and CLI flags is done by ``learnd.adapters.settings``.

Examples
--------
>>> cfg = LearndConfig(schema_={"task": "binary", "n_features": 3})
>>> cfg.learning.batch_size
32
>>> cfg.serving.tcp_host
'127.0.0.1'
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Task = Literal["binary", "multiclass", "regression"]
Device = Literal["auto", "cpu", "cuda"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_loopback(host: str) -> bool:
    """True when ``host`` names only the local machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "learnd.events"
    dead_letter_topic: str = "learnd.dead-letter"
    group_id: str = "learnd"
    client_id: str = "learnd"
    # Chosen on purpose: a fresh deployment learns from everything already in the topic.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # The consumer: kafka-python (default, pure Python) or confluent-kafka (librdkafka, an
    # optional extra): kafka-python parses records in Python, which caps ingest well below what
    # a broker delivers; librdkafka does not.
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    # Run the client and event decoding in a process of their own, overlapping learning on
    # another core (1.4x end to end in a 5-run benchmark on 2 cores, README); false: all in the
    # learning thread, which suits a single core.
    consumer_process: bool = True
    max_poll_records: int = Field(2000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(100, ge=1, le=10_000)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    # kafka-python backs reconnects off exponentially up to this (its default, 30 s, delays the
    # resume after an outage by as much); retries never spin.
    reconnect_backoff_max_ms: int = Field(2000, ge=50, le=120_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                "kafka.heartbeat_interval_ms must be lower than kafka.session_timeout_ms "
                f"(got {self.heartbeat_interval_ms} >= {self.session_timeout_ms})"
            )
        if self.dead_letter_topic == self.topic:
            raise ValueError("kafka.dead_letter_topic must differ from kafka.topic")
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                "kafka.security_protocol SASL_* needs kafka.sasl_mechanism "
                "('PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'), kafka.sasl_username and "
                "kafka.sasl_password"
            )
        return self


class SchemaConfig(_Section):
    """What an event looks like: the task, the features (by name or by count), the classes."""

    task: Task = "binary"
    features: tuple[str, ...] | None = None
    n_features: int | None = Field(None, ge=1, le=1_000_000)
    classes: tuple[str | int, ...] | None = None
    # Larger magnitudes are rejected at validation ("out_of_range"): they overflow float32
    # statistics long before they become inf.
    max_abs_value: float = Field(1e15, gt=0, le=1e38)  # at most what float32 holds (~3.4e38)

    @model_validator(mode="after")
    def _consistent(self) -> SchemaConfig:
        if self.features is None and self.n_features is None:
            raise ValueError("schema needs schema.features (a list of names) or schema.n_features")
        if self.features is not None:
            if len(set(self.features)) != len(self.features):
                raise ValueError("schema.features has duplicate names")
            if self.n_features is not None and self.n_features != len(self.features):
                raise ValueError(
                    f"schema.n_features ({self.n_features}) contradicts schema.features "
                    f"({len(self.features)} names); give one of them"
                )
        if self.task == "multiclass" and (self.classes is None or len(self.classes) < 2):
            raise ValueError("schema.task 'multiclass' needs schema.classes with at least 2 values")
        if self.task == "binary" and self.classes is not None and len(self.classes) != 2:
            raise ValueError("schema.task 'binary' takes exactly 2 schema.classes (or none: 0/1)")
        if self.task == "regression" and self.classes is not None:
            raise ValueError("schema.classes must be empty for schema.task 'regression'")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("schema.classes has duplicate values")
        return self

    @property
    def dim(self) -> int:
        return len(self.features) if self.features is not None else int(self.n_features or 0)

    @property
    def n_outputs(self) -> int:
        if self.task == "multiclass":
            return len(self.classes or ())
        return 1

    @property
    def class_values(self) -> tuple[str | int, ...]:
        """Class labels in output order (binary without classes: ``(0, 1)``)."""
        if self.task == "regression":
            return ()
        return self.classes if self.classes is not None else (0, 1)


class ModelConfig(_Section):
    kind: Literal["mlp", "linear"] = "mlp"
    hidden: tuple[int, ...] = (64, 64)
    activation: Literal["relu", "tanh"] = "relu"
    seed: int = 0

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 for h in v):
            raise ValueError("model.hidden sizes must be >= 1")
        return v


class ChallengerConfig(_Section):
    """A background model trained from a drift warning on (see daemon/challenger.py)."""

    enabled: bool = True
    # The warning detector: an ADWIN on the same error stream, more sensitive than the drift
    # detector (river's default delta is 0.002; its ARF pairs warning 0.01 with drift 0.001).
    warning_delta: float = Field(0.01, gt=0, lt=1)
    # The challenger replaces the served model once, over the last ``window`` events both
    # predicted, its error is below the incumbent's by more than ``margin`` (0.01 = 1 point of
    # accuracy; for regression a fraction of the incumbent's MAE).
    window: int = Field(1000, ge=10, le=1_000_000)
    margin: float = Field(0.01, ge=0, le=1)
    # ... and no worse than the incumbent over the newest recent_share of that window (0.25:
    # SEA, 7 seeds, 3 rehearsal steps per batch: recovery faster than ARF's after 7, 6 and 6 of
    # 7 switches, against 7, 6, 5 with no such check; bench/quality.py --recovery-seeds 7).
    recent_share: float = Field(0.25, gt=0, le=1)
    # Given up (and its compute freed) when it has not won after this many events. 5,000:
    # bench/quality.py's long streams gave the same accuracies and recoveries as with 20,000,
    # both ways, and SEA learned at 104k/s against 95k/s behind the log.
    max_events: int = Field(5_000, ge=10)

    @model_validator(mode="after")
    def _window_fits(self) -> ChallengerConfig:
        if self.max_events < self.window:
            raise ValueError(
                f"learning.drift.challenger.max_events ({self.max_events}) is below its window "
                f"({self.window}): a challenger could never be judged; set max_events >= window"
            )
        return self


class DriftConfig(_Section):
    detector: Literal["adwin", "page_hinkley", "kswin", "none"] = "adwin"
    # Input drift: one detector per feature (the first 64) on each micro-batch's mean.
    input_detector: Literal["adwin", "page_hinkley", "kswin", "none"] = "adwin"
    # Reaction to a concept-drift alarm: multiply the learning rate by lr_boost, then decay
    # back to the base rate with this half-life (in learning steps).
    lr_boost: float = Field(3.0, ge=1.0, le=100.0)
    boost_half_life_steps: int = Field(200, ge=1)
    reset_optimizer: bool = False
    challenger: ChallengerConfig = ChallengerConfig()


class ReplayConfig(_Section):
    """Rehearsal of recently learned events while the learner keeps up (daemon/replay_window.py).

    After each micro-batch, extra optimizer steps are taken on batches drawn from the last
    ``window`` learned events, but only while the consumer lag is at most ``max_lag`` records:
    compute the learner has to spare while live, given back as soon as it falls behind. While
    the window refills (from the start, and after a drift alarm empties it) it takes
    ``refill_steps_per_batch``, once full ``steps_per_batch``, and rehearses up to a lag of
    ``refill_max_lag``. Chosen with bench/quality.py
    (see README "Learning quality"): over seven streams at 20k events, a constant 3 steps lifted
    the mean prequential accuracy from .892 to .918, 8 steps to .926 but cost Hyperplane, a
    continuously drifting stream, 1.3 points at 100k (3 steps: 0.6); 8 while refilling and 3
    after keeps Hyperplane at 3 steps' level and lifts the small streams and the recoveries.
    """

    steps_per_batch: int = Field(3, ge=0, le=32)
    refill_steps_per_batch: int = Field(8, ge=0, le=32)
    # 1,000 since session 10 (2,000 before): with weight averaging, the shorter window tracks
    # a continuously drifting stream better. bench/quality.py, 5 model seeds at 100,000
    # events/s: Hyperplane 0.9349 -> 0.9374; SEA, Agrawal, Bananas and ImageSegments 0.1-0.3
    # points lower (each far above its line); Phishing +0.1 over 12 seeds; SEA's recoveries
    # keeping up faster than ARF's after 21 of 21 switches over seeds 7-13 (20 before).
    window: int = Field(1000, ge=1, le=1_000_000)
    max_lag: int = Field(1000, ge=0)
    # While the window refills, rehearsal goes on up to this lag: headroom above max_lag kept
    # for when rehearsal matters most, a young model and a new concept. Under load the lag
    # hovers at max_lag, so without it an alarm found no compute to rehearse with. At 100,000
    # events/s (bench/quality.py --pace, 5 runs against 3): SEA's recoveries after its second
    # and third switches went from 1,170-1,670 and 1,330-1,610 events to 960-1,120 and
    # 1,100-1,300 (ARF: 1,100 and 1,250); over 5 model seeds Agrawal +0.5 points, ImageSegments
    # +0.6, Bananas +0.25. 2,000 recovered more slowly; with 5,000 Hyperplane's rate fell to
    # 92k/s and Agrawal did not recover from its second switch.
    # A value below max_lag counts as max_lag (no extra headroom).
    refill_max_lag: int = Field(3000, ge=0)

    def lag_limit(self, refilling: bool) -> int:
        """The largest consumer lag at which rehearsal goes on."""
        return max(self.max_lag, self.refill_max_lag) if refilling else self.max_lag


class GateConfig(_Section):
    """The publish gate (see daemon/gate.py): candidates are scored on fresh events first."""

    enabled: bool = True
    # 2000: with 30% flipped labels a candidate 8 points worse measures only ~3 points worse;
    # 500 events let such candidates through (bench/soak.py poison), 2000 does not.
    window: int = Field(2000, ge=10, le=1_000_000)
    # How much worse than the served model a candidate may score: accuracy points (0.005 = 0.5
    # points) for classification, a fraction of the served MAE for regression.
    tolerance: float = Field(0.005, ge=0, le=1)


CompressionForm = Literal["numpy", "torch", "prune", "prune-units", "int8", "fp16", "bf16"]


class CompressionConfig(_Section):
    """Compressed copies for serving (see daemon/compress.py), checked on the gate's window."""

    enabled: bool = True
    # Forms tried at each publish besides the plain numpy copy. The fastest at batch 1 that
    # scores within ``tolerance`` of the plain copy is served; CUDA-only forms (fp16, bf16,
    # int8 through torchao) are skipped, and counted as unavailable, without a GPU.
    forms: tuple[CompressionForm, ...] = ("prune-units", "int8", "fp16")
    prune_amount: float = Field(0.5, gt=0, lt=1)  # "prune": share of all weights zeroed
    units_amount: float = Field(0.25, gt=0, lt=1)  # "prune-units": share of hidden units removed
    # Accuracy points (0.005 = 0.5) a form may lose against the plain copy on the same window;
    # for regression a fraction of the plain copy's MAE.
    tolerance: float = Field(0.005, ge=0, le=1)
    # A form must be this much faster than the plain copy to replace it (timing noise).
    min_speedup: float = Field(1.1, ge=1.0)
    # No compression for this many events after a drift alarm: the plain copy is served
    # while the model recovers.
    after_drift_events: int = Field(5000, ge=0)


class LearningConfig(_Section):
    device: Device = "auto"
    threads: int = Field(1, ge=1, le=256)
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    # 0.01: bench/quality.py across 7 streams, mean prequential accuracy .891 against .817 at
    # 1e-3 (and .869 at 3e-3) at the same speed; see README "Learning quality".
    lr: float = Field(0.01, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(32, ge=1, le=65_536)
    # Catching up: while the consumer lag exceeds catch_up_lag records, batches of
    # catch_up_batch_size are learned (more events/s, fewer steps per event); back to
    # batch_size once the lag is below half of it. None: always batch_size.
    catch_up_lag: int | None = Field(10_000, ge=1)
    catch_up_batch_size: int = Field(256, ge=1, le=65_536)
    # Optimizer steps per micro-batch (the first on the batch's test-then-train forward pass):
    # more steps recover some of the per-example accuracy that batching gives away.
    steps_per_batch: int = Field(1, ge=1, le=16)
    # Predict and serve an exponential moving average of the weights, folded in once per
    # micro-batch with this decay (daemon/averaging.py); 0: the newest weights. 0.8 over 12
    # model seeds (bench/quality.py): Bananas +0.9 points, ImageSegments +0.8, Phishing level;
    # 0.7 and 0.85 within 0.1 of it.
    average_decay: float = Field(0.8, ge=0, lt=1)
    batch_max_age_s: float = Field(0.2, gt=0, le=60)
    metrics_window: int = Field(1000, ge=10, le=1_000_000)
    # A candidate is frozen this often (and judged on the next batch, daemon/gate.py): what is
    # learned is served within about this long plus a batch.
    publish_every_s: float = Field(0.02, gt=0)
    publish_every_events: int | None = Field(None, ge=1)  # also publish after this many events
    deterministic: bool = False
    drift: DriftConfig = DriftConfig()
    replay: ReplayConfig = ReplayConfig()
    gate: GateConfig = GateConfig()
    # Guards: a step whose loss is non-finite or above loss_explosion_factor x its running
    # average is "bad"; after rollback_after_bad_steps bad steps in a row (or at once, when the
    # weights turn non-finite) the learner returns to its last good state, kept every
    # good_state_every_steps steps. A batch whose step raises is retried learn_retries times,
    # then learned event by event, and events that still raise are dead-lettered.
    loss_explosion_factor: float = Field(100.0, gt=1)
    rollback_after_bad_steps: int = Field(3, ge=1)
    good_state_every_steps: int = Field(500, ge=1)
    learn_retries: int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _catch_up(self) -> LearningConfig:
        if self.catch_up_lag is not None and self.catch_up_batch_size < self.batch_size:
            raise ValueError(
                f"learning.catch_up_batch_size ({self.catch_up_batch_size}) is below "
                f"learning.batch_size ({self.batch_size}); set it >= batch_size or set "
                "learning.catch_up_lag to null"
            )
        return self


class ServingConfig(_Section):
    tcp_host: str = "127.0.0.1"
    tcp_port: int | None = Field(7070, ge=0, le=65535)
    unix_path: Path | None = None
    token: SecretStr | None = None
    max_request_bytes: int = Field(1 << 20, ge=256)
    max_batch: int = Field(10_000, ge=1)
    keep_versions: int = Field(5, ge=1, le=1000)  # served versions kept for rollback
    # 0: serve from a thread of the daemon process. N >= 1: N serving processes accepting on
    # the same sockets, reading published snapshots from shared memory (no shared GIL).
    processes: int = Field(1, ge=0, le=64)
    # Python's GIL switch interval while serving: a request arriving while the learner holds
    # the GIL waits up to this long (Python's default, 5 ms, shows up as a 5 ms p99).
    gil_switch_interval_s: float = Field(0.0005, ge=0.00001, le=0.1)
    allow_rollback: bool = True  # the "rollback" and "unpin" socket operations
    max_connections: int = Field(256, ge=1)
    idle_timeout_s: float = Field(300.0, gt=0)
    # At the connection cap, a new client replaces the connection idle longest if it has been
    # idle this long: idle sockets cannot starve a real client.
    evict_idle_after_s: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _safe_bind(self) -> ServingConfig:
        if self.tcp_port is not None and not is_loopback(self.tcp_host) and self.token is None:
            raise ValueError(
                f"serving.tcp_host {self.tcp_host!r} is not a loopback address: set serving.token "
                "(LEARND_SERVING__TOKEN) or bind to 127.0.0.1"
            )
        if self.tcp_port is None and self.unix_path is None:
            raise ValueError("serving needs serving.tcp_port or serving.unix_path (or both)")
        return self


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    # Bearer token for /metrics (Prometheus: ``authorization: {credentials: ...}``).
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _safe_bind(self) -> MetricsConfig:
        if self.enabled and not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"metrics.host {self.host!r} is not a loopback address: set metrics.token "
                "(LEARND_METRICS__TOKEN) or bind to 127.0.0.1"
            )
        return self


class CheckpointConfig(_Section):
    store: Literal["local", "s3"] = "local"
    dir: Path = Path("learnd-state")
    s3_bucket: str | None = None
    s3_prefix: str = "learnd/"
    s3_endpoint_url: str | None = None  # MinIO, Ceph, R2...; None: AWS
    every_events: int = Field(50_000, ge=1)
    every_s: float = Field(30.0, gt=0)
    keep: int = Field(3, ge=1, le=1000)
    # Count, per integer event id, how often it was learned, and keep the counts in the
    # checkpoint: proves exactly-once application across crashes. Grows with the id range.
    audit_ids: bool = False

    @model_validator(mode="after")
    def _store(self) -> CheckpointConfig:
        if self.store == "s3" and not self.s3_bucket:
            raise ValueError("checkpoint.store 's3' needs checkpoint.s3_bucket")
        return self


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class LearndConfig(_Section):
    # ``schema`` shadows a BaseModel attribute, so the field is ``schema_`` with alias ``schema``.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kafka: KafkaConfig = KafkaConfig()
    schema_: SchemaConfig = Field(alias="schema")
    model: ModelConfig = ModelConfig()
    learning: LearningConfig = LearningConfig()
    compression: CompressionConfig = CompressionConfig()
    serving: ServingConfig = ServingConfig()
    metrics: MetricsConfig = MetricsConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _compression_needs_the_gate(self) -> LearndConfig:
        if self.compression.enabled and not self.learning.gate.enabled:
            raise ValueError(
                "compression.enabled needs learning.gate.enabled: compressed copies are checked "
                "on the gate's fresh window; set compression.enabled false or enable the gate"
            )
        return self

    def redacted(self) -> dict:
        """The effective config as plain data with every secret replaced by ``'**********'``."""
        return self.model_dump(mode="json", by_alias=True)
