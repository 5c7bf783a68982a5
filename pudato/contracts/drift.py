"""Drift between a release and what its dataset was: columns added, removed, renamed, retyped, and rows.

:func:`match_columns` pairs the file's headers with the expected columns (the
target table's, else the contract's): by name, by a declared alias, or, for a
header and a column both left over, by name similarity (at the same place among
the leftovers, a looser threshold; never two names whose numbers differ, such
as fiscal years). Every pairing says how it was made, so a
reader can tell a declared rename from a guessed one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pudato.contracts.model import DRIFT_KINDS, ColumnContract, Policies
from pudato.errors import TerminalError

# A guess needs this much alike (difflib ratio); at the same place among the leftovers, less.
SIMILAR = 0.8
SIMILAR_IN_PLACE = 0.75
_DIGITS = re.compile(r"\d+")


class DriftRefused(TerminalError):
    """A release changed its dataset in a way the contract's policy says ``fail`` to; nothing was written."""


@dataclass
class Drift:
    """What changed between the dataset and this release."""

    against: str | None  # "table", "contract" or None (a first release)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[dict[str, Any]] = field(default_factory=list)
    retyped: list[dict[str, str]] = field(default_factory=list)
    rows: dict[str, int | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.retyped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "drifted": self.drifted,
            "added": self.added,
            "removed": self.removed,
            "renamed": self.renamed,
            "retyped": self.retyped,
            "rows": self.rows,
            "warnings": self.warnings,
            "refused": self.refused,
        }

    def apply(self, policies: Policies, kinds: Sequence[str] = DRIFT_KINDS) -> None:
        """Sort each change of these kinds by its policy: warnings for ``warn``, refusals for ``fail``."""
        changes: dict[str, list[str]] = {
            "added": [f"column {c!r} added" for c in self.added],
            "removed": [f"column {c!r} removed" for c in self.removed],
            "renamed": [f"column {r['to']!r} renamed from {r['from']!r} ({r['by']})" for r in self.renamed],
            "retyped": [f"column {r['column']!r} retyped {r['from']} -> {r['to']}" for r in self.retyped],
        }
        for kind in kinds:
            policy = getattr(policies, kind)
            if policy == "warn":
                self.warnings += changes[kind]
            elif policy == "fail":
                self.refused += changes[kind]

    def check(self, dataset: str, **details: Any) -> None:
        """Raise DriftRefused, carrying the whole report, if a change's policy is ``fail``."""
        if self.refused:
            raise DriftRefused(
                f"{dataset}: the release drifted and the contract says fail: {'; '.join(self.refused)}; "
                "nothing was written",
                dataset=dataset,
                drift=self.as_dict(),
                **details,
            )


@dataclass(frozen=True)
class Match:
    header: str  # the file's header, as read
    column: str  # the target column it fills


def match_columns(
    headers: Sequence[str],
    normalized: Sequence[str],
    expected: Sequence[str] | None,
    contract_columns: Mapping[str, ColumnContract],
    normalize: Any,
) -> tuple[list[Match], Drift]:
    """Pair the file's headers with the expected columns; what is left over is added or removed.

    ``expected`` None means a first release: every header is its own column.
    ``normalize`` turns a header or alias into a column name (the load's rule).
    """
    if expected is None:
        return [Match(h, n) for h, n in zip(headers, normalized, strict=False)], Drift(against=None)
    drift = Drift(against="table")
    wanted = list(expected)
    folded = {c.lower(): c for c in wanted}
    matches: dict[int, Match] = {}
    taken: set[str] = set()
    for i, name in enumerate(normalized):
        column = folded.get(name.lower())
        if column is not None and column not in taken:
            matches[i] = Match(headers[i], column)
            taken.add(column)
    aliases = {
        normalize(alias).lower(): column
        for column, spec in contract_columns.items()
        for alias in [*spec.aliases, column]
        if column in wanted
    }
    for i, name in enumerate(normalized):
        if i in matches:
            continue
        column = aliases.get(name.lower()) or aliases.get(normalize(headers[i]).lower())
        if column is not None and column not in taken:
            matches[i] = Match(headers[i], column)
            taken.add(column)
            drift.renamed.append({"from": headers[i], "to": column, "by": "alias"})
    _guess_renames(headers, normalized, wanted, matches, taken, drift)
    drift.added = [normalized[i] for i in range(len(headers)) if i not in matches]
    drift.removed = [c for c in wanted if c not in taken]
    ordered = [matches[i] for i in sorted(matches)]
    ordered += [Match(headers[i], normalized[i]) for i in range(len(headers)) if i not in matches]
    return ordered, drift


def _guess_renames(
    headers: Sequence[str],
    normalized: Sequence[str],
    wanted: Sequence[str],
    matches: dict[int, Match],
    taken: set[str],
    drift: Drift,
) -> None:
    """Pair leftover headers with leftover columns by name similarity, best pairs first."""
    left_headers = [i for i in range(len(headers)) if i not in matches]
    left_columns = [c for c in wanted if c not in taken]
    pairs = []
    for place_h, i in enumerate(left_headers):
        for place_c, column in enumerate(left_columns):
            # "2019-20 Actuals" is not "2014-15 Actuals" renamed: names that differ in their numbers are other facts.
            if _DIGITS.findall(normalized[i]) != _DIGITS.findall(column):
                continue
            score = difflib.SequenceMatcher(None, normalized[i], column).ratio()
            in_place = place_h == place_c
            if score >= SIMILAR or (in_place and score >= SIMILAR_IN_PLACE):
                pairs.append((score, in_place, i, column))
    for score, in_place, i, column in sorted(pairs, key=lambda p: (-p[0], p[2])):
        if i in matches or column in taken:
            continue
        matches[i] = Match(headers[i], column)
        taken.add(column)
        by = "position+similarity" if in_place else "similarity"
        drift.renamed.append({"from": headers[i], "to": column, "by": by, "similarity": round(score, 2)})


def retyped(
    matches: Sequence[Match], observed: Mapping[str, str | None], expected: Mapping[str, str], widening: bool = False
) -> list[dict[str, str]]:
    """Columns whose values in this release have another type than the dataset's.

    With ``widening`` (an append or upsert, which keeps the table's types), a
    release type the table's type takes without loss (``BIGINT`` into
    ``DECIMAL(12,2)``, anything into ``VARCHAR``) is no change.
    """
    changes = []
    for match in matches:
        seen, want = observed.get(match.header), expected.get(match.column)
        if seen and want and seen.upper() != want.upper() and not (widening and fits(seen, want)):
            changes.append({"column": match.column, "from": want, "to": seen})
    return changes


_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_FLOATS = {"FLOAT", "REAL", "DOUBLE"}
_SCALE = re.compile(r"DECIMAL\(\s*\d+\s*,\s*(\d+)\s*\)")


def fits(seen: str, want: str) -> bool:
    """Whether every value of type ``seen`` has a place in a column of type ``want``."""
    seen, want = seen.upper().strip(), want.upper().strip()
    if seen == want or want in ("VARCHAR", "TEXT", "STRING"):
        return True
    if seen in _INTEGERS:
        return want in _INTEGERS | _FLOATS or want.startswith("DECIMAL")
    decimal = _SCALE.fullmatch(seen)
    if decimal:
        wanted = _SCALE.fullmatch(want)
        return want in _FLOATS or bool(wanted and int(wanted.group(1)) >= int(decimal.group(1)))
    return seen == "DATE" and want.startswith("TIMESTAMP")
