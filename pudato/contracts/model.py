"""What a dataset contract says, and what a load reads with.

A contract, ``datasets/<name>.yml`` in the logic repository, declares a
dataset's columns (type, date format, header aliases, constraints), how its
text spells nulls and numbers, its key, a policy per kind of drift and how many
rejected rows a release may have. A load's payload may say the same things;
:func:`merge_options` lays the payload over the contract.

:class:`ColumnRead` is what the warehouse backend gets: one target column, the
header it comes from and how to turn its text into the target type. It is plain
data, so the SQL that does the work stays in the backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Types are put into SQL: no quotes, dashes or semicolons, nothing to smuggle a statement in.
TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_ ,()\[\]]*$")
Policy = Literal["evolve", "warn", "fail"]
DRIFT_KINDS = ("added", "removed", "renamed", "retyped")


def check_type(value: str, column: str) -> str:
    if not TYPE_PATTERN.match(value) or len(value) > 100:
        raise ValueError(f"column {column!r} has type {value!r}, which is not a plain SQL type")
    return value


def check_format(value: str, column: str) -> str:
    if "%" not in value or len(value) > 64 or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"column {column!r} has date format {value!r}; use strptime codes such as '%d/%m/%Y'")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Policies(_Strict):
    """What to do with each kind of change between releases.

    ``evolve`` applies the change and reports it; ``warn`` applies it, reports
    it and adds a warning; ``fail`` fails the step with the report and writes nothing.
    """

    added: Policy = "evolve"
    removed: Policy = "warn"
    renamed: Policy = "warn"
    retyped: Policy = "warn"


class ColumnContract(_Strict):
    type: str | None = None
    format: str | None = None
    aliases: list[str] = Field(default_factory=list)
    nullable: bool = True
    allowed: list[str] | None = None
    pattern: str | None = Field(default=None, max_length=500)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern {value!r} is not a regular expression: {exc}") from None
        return value


class Parsing(_Strict):
    """How a file spells nulls and numbers. None: not said here (the other source, or the default, wins)."""

    null_tokens: list[str] | None = Field(default=None, max_length=50)
    thousands: str | None = Field(default=None, max_length=1)
    decimal: str | None = Field(default=None, min_length=1, max_length=1)
    currency: list[str] | None = Field(default=None, max_length=10)
    negative_parentheses: bool | None = None
    max_rejected: int | float | str | None = None

    @field_validator("max_rejected")
    @classmethod
    def _max_rejected(cls, value: int | float | str | None) -> int | float | str | None:
        if value is not None:
            rejection_limit(value, 1)  # refuse a bad spelling now, not at the end of a load
        return value


class Contract(Parsing):
    """A dataset contract, as read from ``datasets/<name>.yml``."""

    name: str
    description: str | None = None
    columns: dict[str, ColumnContract] = Field(default_factory=dict)
    key: list[str] = Field(default_factory=list)
    policies: Policies = Field(default_factory=Policies)
    # Where the contract came from: repository path and commit, filled in by reading.py.
    source: dict[str, str] = Field(default_factory=dict)

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: dict[str, ColumnContract]) -> dict[str, ColumnContract]:
        for name, column in value.items():
            if column.type is not None:
                check_type(column.type, name)
            if column.format is not None:
                check_format(column.format, name)
        return value


def rejection_limit(value: int | float | str, rows: int) -> int:
    """``max_rejected`` as a row count for a release of ``rows`` rows: ``10``, ``0.05`` or ``"5%"``."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"max_rejected {value!r} is not a count, a fraction or a percentage") from None
    else:
        number = float(value)
    if number < 0:
        raise ValueError(f"max_rejected {value!r} must not be negative")
    if 0 < number < 1:
        return int(number * rows)
    return int(number)


@dataclass(frozen=True)
class TextRules:
    """How text becomes values, for every column of one load."""

    null_tokens: tuple[str, ...] = ("",)
    thousands: str | None = None
    decimal: str = "."
    currency: tuple[str, ...] = ()
    negative_parentheses: bool = False


@dataclass(frozen=True)
class ColumnRead:
    """One column of the target: where its values come from and what they must be.

    ``source`` is the file's header (as read) or None when the file lacks the
    column (it is then NULL). ``type`` None means: infer it from the values.
    """

    name: str
    source: str | None
    type: str | None = None
    format: str | None = None
    nullable: bool = True
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    # The type was inferred from every value of this release: no value can fail it.
    inferred: bool = False


@dataclass
class LoadRules:
    """Everything a load checks, from the contract and the payload together."""

    text: TextRules = field(default_factory=TextRules)
    types: dict[str, str] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    columns: dict[str, ColumnContract] = field(default_factory=dict)
    key: list[str] = field(default_factory=list)
    policies: Policies = field(default_factory=Policies)
    max_rejected: int | float | str | None = None
    contract: Contract | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "contract": self.contract.name if self.contract else None,
            **(self.contract.source if self.contract else {}),
        }


def merge_options(
    contract: Contract | None,
    parsing: Parsing,
    types: dict[str, str],
    formats: dict[str, str],
    key: list[str] | None,
) -> LoadRules:
    """The payload's options laid over the contract's (the payload wins where it says something)."""
    base = contract or Contract(name="")
    null_tokens = parsing.null_tokens if parsing.null_tokens is not None else base.null_tokens
    currency = parsing.currency if parsing.currency is not None else base.currency
    parentheses = (
        parsing.negative_parentheses if parsing.negative_parentheses is not None else base.negative_parentheses
    )
    text = TextRules(
        null_tokens=tuple(null_tokens) if null_tokens is not None else ("",),
        thousands=parsing.thousands if parsing.thousands is not None else base.thousands,
        decimal=parsing.decimal or base.decimal or ".",
        currency=tuple(currency or ()),
        negative_parentheses=bool(parentheses),
    )
    if text.thousands is not None and text.thousands == text.decimal:
        raise ValueError(f"thousands and decimal separators are both {text.decimal!r}")
    contract_types = {n: c.type for n, c in base.columns.items() if c.type}
    contract_formats = {n: c.format for n, c in base.columns.items() if c.format}
    return LoadRules(
        text=text,
        types={**contract_types, **types},
        formats={**contract_formats, **formats},
        columns=dict(base.columns),
        key=list(key if key else base.key),
        policies=base.policies,
        max_rejected=parsing.max_rejected if parsing.max_rejected is not None else base.max_rejected,
        contract=contract,
    )
