"""The ``[labels]`` section of learnd's config: where labels come from, and how long a feature
row waits for its label.

``LearndConfig`` (in ``learnd.daemon.config``) holds it under ``labels``; import it from there.
A string literal after a field is its description (``docs/configuration.md`` is generated from
them).

Examples
--------
>>> LabelsConfig().mode
'inline'
>>> LabelsConfig(mode="join", on_expiry="learn", default_label=0).default_label
0
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from learnd.daemon.config_learning import Section


class LabelsConfig(Section):
    """Labels inline in each event, or joined by ``id`` from ``kafka.labels_topic``
    (docs/labels.md). ``on_expiry: learn`` needs ``default_label``."""

    mode: Literal["inline", "join"] = "inline"
    """``inline``: every event on ``kafka.topic`` carries its label. ``join``: events may come
    without a label (features and an ``id``), and served predictions that carry an ``id`` are
    logged to ``kafka.predictions_topic``; both wait for their label from ``kafka.labels_topic``
    and are learned when it arrives."""
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86400)
    """How long features wait for their label (seconds since they arrived); then they expire
    per ``on_expiry``. Labels that arrive before their features wait as long."""
    max_pending: int = Field(1_000_000, ge=1, le=100_000_000)
    """At most this many feature rows wait for labels; past it the oldest expire early (counted
    as evicted), so memory stays bounded."""
    max_early_labels: int = Field(100_000, ge=0, le=100_000_000)
    """At most this many labels wait for features that have not arrived yet; past it the oldest
    is dead-lettered as an orphan. While the event topic is behind (a backlog), the label topic
    is not read past this many instead: the labels wait in the log for their features."""
    remember_matched: int = Field(100_000, ge=0, le=100_000_000)
    """How many matched ids are remembered (about 100 bytes each, and saved in every
    checkpoint) to recognise a duplicate label (or duplicate features) for them; a duplicate
    older than that waits as an early label and ends as an orphan, never learned twice."""
    on_expiry: Literal["drop", "learn"] = "drop"
    """What becomes of features whose label never came: ``drop`` (counted), or ``learn`` them
    with ``default_label`` (a reward loop's "no click")."""
    default_label: str | int | float | None = None
    """The label learned for expired features with ``on_expiry: learn``; must be valid for the
    schema (one of its classes, or a number for regression)."""

    @model_validator(mode="after")
    def _consistent(self) -> LabelsConfig:
        if self.on_expiry == "learn" and self.default_label is None:
            raise ValueError(
                "labels.on_expiry 'learn' needs labels.default_label (the label learned for "
                "features whose label never came); or set labels.on_expiry 'drop'"
            )
        return self


def distinct_topics(topic: str, dead_letters: str, labels: str, predictions: str) -> None:
    """Refuse a configuration whose Kafka topics are not all different."""
    if len({topic, dead_letters, labels, predictions}) != 4:
        raise ValueError(
            "kafka.topic, kafka.dead_letter_topic, kafka.labels_topic and "
            "kafka.predictions_topic must all differ"
        )
