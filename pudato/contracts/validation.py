"""The validation report of a load: what failed, where, why, and what would let it in.

The warehouse backend runs the checks (they are SQL, see
:mod:`pudato.backends.warehouse.checks`) and fills a :class:`ValidationReport`;
this module says what the report holds, how each failure is explained, and when
the rejected rows are too many for the load to go on (``max_rejected``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pudato.contracts.model import ColumnRead, rejection_limit
from pudato.errors import InvalidCommand

REASONS = ("type", "not-null", "allowed", "pattern", "unique")
DATE_KINDS = ("DATE", "TIMESTAMP", "DATETIME", "TIMESTAMPTZ")


@dataclass
class ValidationReport:
    """Every failed value of a release, counted per kind and per column; the first ones in full."""

    rows: int
    rejected: int
    counts: dict[str, int] = field(default_factory=dict)
    by_column: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, column: ColumnRead, row: int, value: str | None, reason: str) -> None:
        """One failed value, shown in full (the counts come from :meth:`count`)."""
        self.errors.append({
            "row": row, "column": column.name, "value": value, "reason": reason,
            "expected": expected(column, reason), "fix": fix(column, reason),
        })

    def count(self, column: str, reason: str, n: int) -> None:
        self.by_column.setdefault(column, {})[reason] = n
        self.counts[reason] = self.counts.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.rows - self.rejected,
            "rejected": self.rejected,
            "counts": self.counts,
            "by_column": self.by_column,
            "errors": self.errors,
            "errors_shown": len(self.errors),
        }

    def enforce(self, max_rejected: int | float | str | None, label: str, **details: Any) -> None:
        """Fail the load, with the report, when more rows were rejected than ``max_rejected`` allows."""
        if max_rejected is None or not self.rejected:
            return
        limit = rejection_limit(max_rejected, self.rows)
        if self.rejected > limit:
            raise InvalidCommand(
                f"{label}: {self.rejected} of {self.rows} rows were rejected, over max_rejected "
                f"({max_rejected}, {limit} rows); nothing was written. Fix the file, or raise max_rejected",
                dataset=label,
                validation=self.as_dict(),
                **details,
            )


def _kind(column: ColumnRead) -> str:
    return str(column.type).strip().upper().split("(", 1)[0].split(" ", 1)[0]


def expected(column: ColumnRead, reason: str) -> str:
    """What the value should have been."""
    if reason == "type":
        return f"{column.type} in format {column.format}" if column.format else str(column.type)
    if reason == "allowed":
        return f"one of {list(column.allowed or [])}"
    if reason == "pattern":
        return f"matching {column.pattern}"
    return {"not-null": "a value", "unique": "a key not seen before"}.get(reason, reason)


def fix(column: ColumnRead, reason: str) -> str:
    """The load option (or contract field) that would let such a value in, if there is one."""
    if reason == "type" and _kind(column) in DATE_KINDS:
        return f"date_formats: {{{column.name}: '<strptime format>'}}, or null_tokens for placeholders"
    if reason == "type":
        return "null_tokens, thousands, decimal, currency or negative_parentheses; or types for this column"
    return {
        "not-null": "nullable: true in the contract",
        "unique": "unique_key, or mode: upsert",
        "allowed": "allowed in the contract",
        "pattern": "pattern in the contract",
    }.get(reason, "")
