"""Typed features: the ``[schema.features]`` table form and the input layout it implies.

The list form of ``schema.features`` names numbers only. The table form gives each feature a
type (docs/events.md, "Typed features"): ``number``, ``boolean``, ``category`` or ``tokens``,
written as the type's name or as a table of options. :class:`FeatureLayout` is what every
stage reads of it: how an event becomes one float32 row (the *encoded* row), which columns are
numbers and which hold category keys, and where each category's rows lie in the embedding
table.

An encoded row holds, in declared order, one column per number or boolean (the value; a
missing one is NaN), followed by its missing indicator (1.0 when missing) if the feature
imputes, then one key column per category and ``max_tokens`` per tokens feature. A key is a
value's stable hash below 2**24 (exact in float32), :data:`MISSING_KEY` for a missing value,
:data:`NO_KEY` for an unused tokens slot.

Examples
--------
>>> lay = FeatureLayout.of({"amount": FeatureSpec(type="number"),
...                         "n_prev": FeatureSpec(type="number", missing="impute"),
...                         "country": FeatureSpec(type="category")})
>>> lay.numeric_names, lay.n_keys, lay.dim
(('amount', 'n_prev', 'n_prev.missing'), 1, 4)
>>> lay.tables[0].name, lay.tables[0].rows
('country', 2025)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureType = Literal["number", "boolean", "category", "tokens"]

KEY_BITS = 24  # keys stay exact in float32 (integers up to 2**24)
KEY_SPACE = 1 << KEY_BITS
MISSING_KEY = float(KEY_SPACE)  # the key of a missing category (exact in float32)
NO_KEY = -1.0  # an unused tokens slot


class FeatureSpec(BaseModel):
    """One typed feature of ``[schema.features]``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: FeatureType
    """``number``, ``boolean``, ``category`` or ``tokens``."""
    missing: Literal["impute", "reject"] | None = None
    """What a null or absent value does: ``impute`` (numbers: the running mean plus a
    missing-indicator input; booleans likewise; categories and tokens: the "missing" row) or
    ``reject`` (dead-lettered as ``missing_field``). Default: ``reject`` for numbers and
    booleans, ``impute`` for categories and tokens."""
    strings: bool = False
    """Numbers only: also accept numbers sent as strings (``"12.5"``)."""
    vocabulary: int | None = Field(None, ge=0, le=1_000_000)
    """Categories and tokens: values learned into rows of their own, first come first served
    (default 1000); later values share ``buckets`` hashed rows."""
    buckets: int | None = Field(None, ge=1, le=KEY_SPACE)
    """Categories and tokens: hashed rows for values beyond the vocabulary (default 1024)."""
    max_tokens: int | None = Field(None, ge=1, le=1024)
    """Tokens only: most strings in one event's list (default 16); a longer list is
    rejected as ``too_many_tokens``."""

    @model_validator(mode="after")
    def _options_fit_the_type(self) -> FeatureSpec:
        categorical = self.type in ("category", "tokens")
        if self.strings and self.type != "number":
            raise ValueError(f"'strings' applies to type 'number' only, not {self.type!r}")
        if not categorical and (self.vocabulary is not None or self.buckets is not None):
            raise ValueError(
                f"'vocabulary' and 'buckets' apply to types 'category' and 'tokens', not "
                f"{self.type!r}"
            )
        if self.max_tokens is not None and self.type != "tokens":
            raise ValueError(f"'max_tokens' applies to type 'tokens' only, not {self.type!r}")
        return self

    @property
    def imputes(self) -> bool:
        if self.missing is not None:
            return self.missing == "impute"
        return self.type in ("category", "tokens")

    @property
    def n_vocabulary(self) -> int:
        return 1000 if self.vocabulary is None else self.vocabulary

    @property
    def n_buckets(self) -> int:
        return 1024 if self.buckets is None else self.buckets

    @property
    def n_tokens(self) -> int:
        return 16 if self.max_tokens is None else self.max_tokens

    def describe(self) -> dict:
        """The spec as shown by ``info``: the type and every option in effect."""
        out: dict = {"type": self.type, "missing": "impute" if self.imputes else "reject"}
        if self.type == "number":
            out["strings"] = self.strings
        if self.type in ("category", "tokens"):
            out["vocabulary"], out["buckets"] = self.n_vocabulary, self.n_buckets
        if self.type == "tokens":
            out["max_tokens"] = self.n_tokens
        return out


@dataclass(frozen=True, slots=True)
class TableSpec:
    """The embedding rows of one category or tokens feature: ``offset`` is its first row in
    the shared table; row 0 is "missing", then the vocabulary, then the hashed buckets."""

    name: str
    offset: int
    vocabulary: int
    buckets: int
    columns: tuple[int, ...]  # its key columns in the encoded row

    @property
    def rows(self) -> int:
        return 1 + self.vocabulary + self.buckets


@dataclass(frozen=True, slots=True)
class FeatureLayout:
    """Where each typed feature lies in the encoded row and in the embedding table."""

    specs: tuple[tuple[str, FeatureSpec], ...]
    numeric_names: tuple[str, ...]  # the numeric columns, first in the row
    tables: tuple[TableSpec, ...]

    @classmethod
    def of(cls, features: dict[str, FeatureSpec]) -> FeatureLayout:
        numeric: list[str] = []
        for name, spec in features.items():
            if spec.type in ("number", "boolean"):
                numeric.append(name)
                if spec.imputes:
                    numeric.append(f"{name}.missing")
        col, offset = len(numeric), 0
        tables = []
        for name, spec in features.items():
            if spec.type in ("category", "tokens"):
                width = 1 if spec.type == "category" else spec.n_tokens
                cols = tuple(range(col, col + width))
                tables.append(TableSpec(name, offset, spec.n_vocabulary, spec.n_buckets, cols))
                col += width
                offset += tables[-1].rows
        return cls(tuple(features.items()), tuple(numeric), tuple(tables))

    @property
    def n_numeric(self) -> int:
        return len(self.numeric_names)

    @property
    def n_keys(self) -> int:
        return sum(len(t.columns) for t in self.tables)

    @property
    def dim(self) -> int:
        return self.n_numeric + self.n_keys

    @property
    def n_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def describe(self) -> dict:
        return {name: spec.describe() for name, spec in self.specs}
