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
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from learnd.daemon.config_kafka import KafkaConfig, Secret
from learnd.daemon.config_labels import LabelsConfig
from learnd.daemon.config_learning import (
    ChallengerConfig,
    CompressionConfig,
    DriftConfig,
    GateConfig,
    LearningConfig,
    LinearMemberConfig,
    ReplayConfig,
    Section,
)
from learnd.daemon.config_schema import FeatureLayout, FeatureSpec

__all__ = [
    "CheckpointConfig",
    "ChallengerConfig",
    "CompressionConfig",
    "DriftConfig",
    "GateConfig",
    "KafkaConfig",
    "LabelsConfig",
    "LearndConfig",
    "LearningConfig",
    "LinearMemberConfig",
    "LogConfig",
    "MetricsConfig",
    "ModelConfig",
    "ReplayConfig",
    "FeatureSpec",
    "SchemaConfig",
    "ServingConfig",
    "is_loopback",
]

Task = Literal["binary", "multiclass", "regression"]


def is_loopback(host: str) -> bool:
    """True when ``host`` names only the local machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _features_form(v: Any) -> str:
    return "table" if isinstance(v, dict) else "list"


# A list of names (all numbers) or a [schema.features] table of typed features; the form is
# told apart first, so that an error in either names only what that form expects.
FeatureList = Annotated[
    Annotated[tuple[str, ...], Tag("list")] | Annotated[dict[str, FeatureSpec], Tag("table")],
    Discriminator(_features_form),
]


class SchemaConfig(Section):
    """What an event looks like: the task, the features (by name or by count), the classes.
    This section is required: one of ``features`` and ``n_features`` must be given (both only if
    they agree); ``multiclass`` needs at least 2 ``classes``, ``binary`` takes exactly 2 or none
    (0/1), ``regression`` none."""

    task: Task = "binary"
    """What is learned: a 0/1 label, one of ``classes``, or a number."""
    features: FeatureList | None = None
    """Feature names, in model input order (a list: all numbers); events may then send
    ``features`` as an object. A table ``[schema.features]`` gives each feature a type
    (``number``, ``boolean``, ``category``, ``tokens``) and options: docs/events.md, "Typed
    features"."""
    n_features: int | None = Field(None, ge=1, le=1_000_000)
    """Feature count, for events that send ``features`` as a list."""
    classes: tuple[str | int, ...] | None = None
    """Class labels, in output order: required for ``multiclass``, optional (2) for ``binary``."""
    max_abs_value: float = Field(1e15, gt=0, le=1e38)  # at most what float32 holds (~3.4e38)
    """Larger feature (and regression label) magnitudes are rejected as ``out_of_range``: they
    overflow float32 statistics long before they become inf."""

    @field_validator("features", mode="before")
    @classmethod
    def _typed_table(cls, v: Any) -> Any:
        if isinstance(v, dict):  # ``amount = "number"`` is ``amount = { type = "number" }``
            return {k: {"type": t} if isinstance(t, str) else t for k, t in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SchemaConfig:
        if isinstance(self.features, dict):
            if not self.features:
                raise ValueError("schema.features is an empty table; declare at least one")
            if self.n_features is not None:
                raise ValueError(
                    "schema.n_features is for list events; a [schema.features] table declares "
                    "the features: remove schema.n_features"
                )
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
    def feature_names(self) -> tuple[str, ...] | None:
        """The declared feature names in order (either form), or None (``n_features``)."""
        return tuple(self.features) if self.features is not None else None

    @property
    def layout(self) -> FeatureLayout | None:
        """The typed layout of a ``[schema.features]`` table; None for the list form."""
        if isinstance(self.features, dict):
            return FeatureLayout.of(self.features)
        return None

    @property
    def dim(self) -> int:
        """Width of an encoded event row (the list form: the number of features)."""
        if isinstance(self.features, dict):
            return FeatureLayout.of(self.features).dim
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


class ModelConfig(Section):
    """The network that is learned and served."""

    kind: Literal["mlp", "linear"] = "mlp"
    """A multi-layer perceptron, or a linear model."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the MLP (each >= 1)."""
    activation: Literal["relu", "tanh"] = "relu"
    """The MLP's activation."""
    seed: int = 0
    """Weight initialisation seed."""

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 for h in v):
            raise ValueError("model.hidden sizes must be >= 1")
        return v


class ServingConfig(Section):
    """The prediction socket (docs/protocol.md). A TCP bind to anything but loopback needs
    ``token``; at least one of ``tcp_port`` and ``unix_path`` must be set."""

    tcp_host: str = "127.0.0.1"
    """TCP bind address; non-loopback requires ``serving.token``."""
    tcp_port: int | None = Field(7070, ge=0, le=65535)
    """TCP port (``0``: any free port; none: no TCP)."""
    unix_path: Path | None = None
    """Unix socket path (mode 0660)."""
    token: Secret | None = None
    """Secret every request must carry as ``"token"`` (never empty or blank, redacted, never
    logged)."""
    max_request_bytes: int = Field(1 << 20, ge=256)
    """Longest request line; a longer one is refused and its connection closed."""
    max_batch: int = Field(10_000, ge=1)
    """Most instances per ``predict_many``."""
    keep_versions: int = Field(5, ge=1, le=1000)
    """Served versions kept for ``rollback`` (and OIP's ``versions/{v}`` endpoints): the last
    this many, and as many older ones, each published at least ``keep_spacing_s`` after the one
    before it."""
    keep_spacing_s: float = Field(60.0, ge=0, le=86_400)
    """Spacing of the older kept versions: rollback reaches ``keep_versions`` x this far back
    (5 minutes by default), where the last versions alone span a fraction of a second at the
    default publish rate. ``0``: keep only the last ``keep_versions``."""
    processes: int = Field(1, ge=0, le=64)
    """Serving processes accepting on the same sockets, reading published snapshots from shared
    memory (no shared GIL). ``0``: serve from a thread of the daemon process."""
    gil_switch_interval_s: float = Field(0.0005, ge=0.00001, le=0.1)
    """Python's GIL switch interval while serving: with ``processes: 0`` a request arriving while
    the learner holds the GIL waits up to this long (Python's default, 5 ms, shows up as a 5 ms
    p99)."""
    allow_rollback: bool = True
    """Allow the ``rollback`` and ``unpin`` socket operations."""
    max_connections: int = Field(256, ge=1)
    """Connection cap."""
    idle_timeout_s: float = Field(300.0, gt=0)
    """Idle connections are closed after this."""
    evict_idle_after_s: float = Field(1.0, ge=0)
    """At the connection cap, a new client replaces the connection idle longest if that one has
    been idle this long: idle sockets cannot starve a real client."""
    oip_http_port: int | None = Field(None, ge=0, le=65535)
    """Open Inference Protocol (KServe v2) over HTTP on ``tcp_host``, answered by the serving
    processes (docs/operations.md); ``0``: any free port; none: off (needs the ``oip`` extra).
    Conventional: 8000."""
    oip_grpc_port: int | None = Field(None, ge=0, le=65535)
    """Open Inference Protocol over gRPC (``inference.GRPCInferenceService``) on ``tcp_host``;
    none: off. Conventional: 8001."""
    model_name: str = Field("learnd", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """The model's name in Open Inference Protocol routes and messages."""

    @model_validator(mode="after")
    def _safe_bind(self) -> ServingConfig:
        listening = self.tcp_port, self.oip_http_port, self.oip_grpc_port
        if (
            any(p is not None for p in listening)
            and not is_loopback(self.tcp_host)
            and self.token is None
        ):
            raise ValueError(
                f"serving.tcp_host {self.tcp_host!r} is not a loopback address: set serving.token "
                "(LEARND_SERVING__TOKEN) or bind to 127.0.0.1"
            )
        oip = self.oip_http_port is not None or self.oip_grpc_port is not None
        if oip and self.processes == 0:
            raise ValueError(
                "serving.oip_http_port and serving.oip_grpc_port are answered by the serving "
                "processes: set serving.processes >= 1 (or both ports to null)"
            )
        if self.tcp_port is None and self.unix_path is None:
            raise ValueError("serving needs serving.tcp_port or serving.unix_path (or both)")
        return self


class MetricsConfig(Section):
    """Prometheus ``/metrics``. A bind to anything but loopback needs ``token``."""

    enabled: bool = True
    """Serve ``/metrics``."""
    host: str = "127.0.0.1"
    """Bind address; non-loopback requires ``metrics.token``."""
    port: int = Field(9464, ge=0, le=65535)
    """HTTP port."""
    token: Secret | None = None
    """Bearer token for ``/metrics`` (Prometheus: ``authorization: {credentials: ...}``; never
    empty or blank)."""

    @model_validator(mode="after")
    def _safe_bind(self) -> MetricsConfig:
        if self.enabled and not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"metrics.host {self.host!r} is not a loopback address: set metrics.token "
                "(LEARND_METRICS__TOKEN) or bind to 127.0.0.1"
            )
        return self


class CheckpointConfig(Section):
    """Atomic checkpoints of the model state with the positions it reflects
    (docs/operations.md). ``store: s3`` needs ``s3_bucket``."""

    store: Literal["local", "s3"] = "local"
    """``local``: a directory. ``s3``: S3-compatible object storage (``pip install
    'learnd[s3]'``, credentials from boto3's usual chain)."""
    dir: Path = Path("learnd-state")
    """Checkpoint directory (``local``)."""
    s3_bucket: str | None = None
    """Bucket (``s3``, required)."""
    s3_prefix: str = "learnd/"
    """Key prefix (``s3``)."""
    s3_endpoint_url: str | None = None
    """Endpoint of MinIO, Ceph, R2, ... (``s3``; none: AWS)."""
    every_events: int = Field(50_000, ge=1)
    """Checkpoint after this many records..."""
    every_s: float = Field(30.0, gt=0)
    """... or after this many seconds, and at shutdown."""
    keep: int = Field(3, ge=1, le=1000)
    """Checkpoints kept; a corrupt newest one falls back to the previous, loudly."""
    audit_ids: bool = False
    """Count, per integer event ``id``, how often it was learned, and keep the counts in the
    checkpoint: proves exactly-once application across crashes. Grows with the id range."""

    @model_validator(mode="after")
    def _store(self) -> CheckpointConfig:
        if self.store == "s3" and not self.s3_bucket:
            raise ValueError("checkpoint.store 's3' needs checkpoint.s3_bucket")
        return self


class LogConfig(Section):
    """Logs go to stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe level logged."""
    format: Literal["text", "json"] = "text"
    """``json``: JSON lines with an ``event`` field (start, restore, checkpoint, drift_alarm,
    publish, gate_rejected, rollback, rebalance, shutdown, ...; docs/operations.md)."""


class LearndConfig(Section):
    # ``schema`` shadows a BaseModel attribute, so the field is ``schema_`` with alias ``schema``.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )

    kafka: KafkaConfig = KafkaConfig()
    schema_: SchemaConfig = Field(alias="schema")
    model: ModelConfig = ModelConfig()
    learning: LearningConfig = LearningConfig()
    labels: LabelsConfig = LabelsConfig()
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


def secret_fields(model: type[BaseModel] = LearndConfig, prefix: str = "") -> tuple[str, ...]:
    """The dotted names of every secret in the config (tokens, passwords).

    Examples
    --------
    >>> secret_fields()
    ('kafka.sasl_password', 'serving.token', 'metrics.token')
    """
    out: list[str] = []
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        if _holds(field.annotation, SecretStr):
            out.append(path)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += secret_fields(field.annotation, path + ".")
    return tuple(out)


def _holds(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_holds(a, kind) for a in get_args(annotation))
