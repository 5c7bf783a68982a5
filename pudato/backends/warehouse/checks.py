"""Checking staged rows against their column rules, and writing what passed and what did not.

Works on the temp table :mod:`pudato.backends.warehouse.typed` staged. The
checks are one statement building ``pudato_load_checked``: per column the text
(after null tokens), the parsed value, and the first reason it fails, if any:
``type``, ``not-null``, ``allowed``, ``pattern`` or ``unique``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pudato.backends.warehouse import TableName, quote_identifier
from pudato.backends.warehouse.session import Session
from pudato.backends.warehouse.sql import sql_string
from pudato.backends.warehouse.typed import (
    CHECKED,
    RAW,
    REJECTED_SUFFIX,
    TEXT_TYPES,
    Staged,
    _alias,
    _token,
    base_type,
    not_blank,
    parse_expression,
)
from pudato.contracts.model import ColumnRead, TextRules
from pudato.contracts.validation import ValidationReport

_SAMPLE = 200
_NAME_MAX = 63


def check_rows(
    session: Session,
    staged: Staged,
    columns: Sequence[ColumnRead],
    rules: TextRules,
    key: Sequence[str] = (),
    existing: TableName | None = None,
    skip_blank: bool = True,
) -> ValidationReport:
    """Build the checked table and return the validation report.

    ``key`` names target columns that must be unique in the release; with
    ``existing`` (an append) a key already in that table is a rejection too.
    """
    t_cols, v_cols, e_cols = [], [], []
    index = {c.name: i for i, c in enumerate(columns)}
    unchanged: set[int] = set()  # typed sources (Parquet, JSON) already of the target type: nothing to parse
    for i, c in enumerate(columns):
        if c.source is None:
            t_cols.append(f"CAST(NULL AS VARCHAR) AS {_alias('t', i)}")
            v_cols.append(f"CAST(NULL AS {c.type}) AS {_alias('v', i)}")
            continue
        source = quote_identifier(c.source)
        t_cols.append(f"{_token(source, staged.text, rules)} AS {_alias('t', i)}")
        same = not staged.text and staged.types.get(c.source, "").upper() == str(c.type).upper()
        if same:
            unchanged.add(i)
        parsed = source if same else parse_expression(_alias("t", i), str(c.type), c.format, rules)
        v_cols.append(f"CAST({parsed} AS {c.type}) AS {_alias('v', i)}")
    keys = [index[k] for k in key if k in index]
    window = ""
    if keys:
        present = " AND ".join(f"{_alias('v', k)} IS NOT NULL" for k in keys)
        over = ", ".join(_alias("v", k) for k in keys)
        window = (
            f", CASE WHEN {present} THEN row_number() OVER (PARTITION BY {over} ORDER BY __pudato_row) END"
            " AS __pudato_seen"
        )
    fallible: list[int] = []
    for i, c in enumerate(columns):
        t, v = _alias("t", i), _alias("v", i)
        fits = c.inferred or i in unchanged or (
            base_type(str(c.type)) in TEXT_TYPES and (staged.text or c.source is None)
        )
        cases = [] if fits else [f"WHEN {t} IS NOT NULL AND {v} IS NULL THEN 'type'"]
        if not c.nullable:
            cases.append(f"WHEN {v} IS NULL THEN 'not-null'")
        if c.allowed is not None:
            allowed = ", ".join(sql_string(a) for a in c.allowed) or "NULL"
            cases.append(f"WHEN {t} IS NOT NULL AND {t} NOT IN ({allowed}) THEN 'allowed'")
        if c.pattern is not None:
            cases.append(f"WHEN {t} IS NOT NULL AND NOT regexp_full_match({t}, {sql_string(c.pattern)}) THEN 'pattern'")
        if keys and i == keys[0]:
            cases.append("WHEN __pudato_seen > 1 THEN 'unique'")
            if existing is not None:
                on = " AND ".join(f"x.{quote_identifier(columns[k].name)} = {_alias('v', k)}" for k in keys)
                cases.append(f"WHEN EXISTS (SELECT 1 FROM {existing.sql} x WHERE {on}) THEN 'unique'")
        if cases:  # a text column without constraints cannot fail: no reason column to store
            fallible.append(i)
            e_cols.append(f"CASE {' '.join(cases)} END AS {_alias('e', i)}")
    where = not_blank(staged) if skip_blank else ""
    # Only what the report and the writes need: the original fields stay in the staged table, and a text
    # column's text is its value, so it is stored once.
    kept = ", ".join(
        ["__pudato_row"]
        + [_alias("v", i) for i in range(len(columns))]
        + [_alias("t", i) for i, c in enumerate(columns) if not _text_target(c, staged)]
        + [_alias("e", i) for i in fallible]
    )
    bad = " OR ".join(f"{_alias('e', i)} IS NOT NULL" for i in fallible) or "false"
    # When no value can fail (types inferred from these very values, no constraints), a view is enough:
    # the rows are parsed once, as they are written.
    kind = "TABLE" if fallible else "VIEW"
    session.execute(
        f"CREATE OR REPLACE TEMP {kind} {CHECKED} AS "
        f"WITH t AS (SELECT rowid + 1 AS __pudato_row, *, {', '.join(t_cols)} FROM {RAW} {where}), "
        f"v AS (SELECT *, {', '.join(v_cols)} FROM t), "
        f"w AS (SELECT *{window} FROM v), "
        f"e AS (SELECT *{''.join(', ' + e for e in e_cols)} FROM w) "
        f"SELECT {kept}, ({bad}) AS __pudato_bad FROM e",
        record=False,
    )
    return _report(session, columns)


def _text_target(column: ColumnRead, staged: Staged) -> bool:
    return base_type(str(column.type)) in TEXT_TYPES and (staged.text or column.source is None)


def _stored(session: Session) -> set[str]:
    """The columns the checked table holds (reason columns only for columns that can fail)."""
    return {d[0] for d in session.execute(f"SELECT * FROM {CHECKED} LIMIT 0", record=False).description}


def _text_of(i: int, stored: set[str]) -> str:
    t = _alias("t", i)
    return t if t.strip('"') in stored else f"CAST({_alias('v', i)} AS VARCHAR)"


def _report(session: Session, columns: Sequence[ColumnRead]) -> ValidationReport:
    stored = _stored(session)
    failures = " UNION ALL ".join(
        f"SELECT __pudato_row AS r, {sql_string(c.name)} AS c, {_text_of(i, stored)} AS value, "
        f"{_alias('e', i)} AS reason FROM {CHECKED} WHERE {_alias('e', i)} IS NOT NULL"
        for i, c in enumerate(columns)
        if _alias("e", i).strip('"') in stored
    )
    rows, rejected = session.rows(f"SELECT count(*), count(*) FILTER (__pudato_bad) FROM {CHECKED}")[0]
    report = ValidationReport(int(rows), int(rejected))
    if failures:
        for column, reason, n in session.rows(
            f"SELECT c, reason, count(*) FROM ({failures}) GROUP BY ALL ORDER BY ALL"
        ):
            report.count(column, reason, int(n))
        spec = {c.name: c for c in columns}
        for row, column, value, reason in session.rows(f"SELECT * FROM ({failures}) ORDER BY r, c LIMIT {_SAMPLE}"):
            report.add(spec[column], int(row), value, reason)
    return report


def good_rows(columns: Sequence[ColumnRead]) -> str:
    select = ", ".join(f"{_alias('v', i)} AS {quote_identifier(c.name)}" for i, c in enumerate(columns))
    # The checked table holds the rows in file order already; no sort needed.
    return f"SELECT {select} FROM {CHECKED} WHERE NOT __pudato_bad"


def write_rows(
    session: Session,
    name: TableName,
    columns: Sequence[ColumnRead],
    mode: Literal["replace", "append", "upsert"],
    new_columns: Sequence[ColumnRead] = (),
    key: Sequence[str] = (),
) -> tuple[int, int]:
    """Write the rows that passed: (inserted, updated). ``new_columns`` are added to the table first."""
    query = good_rows(columns)
    if mode == "replace":
        session.ensure_schema(name)
        return session.replace_with(name, query), 0
    for column in new_columns:
        session.write(f"ALTER TABLE {name.sql} ADD COLUMN {quote_identifier(column.name)} {column.type}")
    if mode == "append":
        return session.append(name, query), 0
    on = " AND ".join(f"t.{quote_identifier(k)} = s.{quote_identifier(k)}" for k in key)
    updated = int(
        session.rows(f"SELECT count(*) FROM ({query}) s WHERE EXISTS (SELECT 1 FROM {name.sql} t WHERE {on})")[0][0]
    )
    quoted = [quote_identifier(c.name) for c in columns]
    updates = [f"{q} = s.{q}" for c, q in zip(columns, quoted, strict=False) if c.name not in key]
    when_matched = f" WHEN MATCHED THEN UPDATE SET {', '.join(updates)}" if updates else ""
    total = session.write(
        f"MERGE INTO {name.sql} AS t USING ({query}) AS s ON ({on}){when_matched} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(quoted)}) VALUES ({', '.join('s.' + q for q in quoted)})"
    )
    return total - updated, updated


def rejected_table(name: TableName) -> TableName:
    return TableName(name.schema, name.table[: _NAME_MAX - len(REJECTED_SUFFIX)] + REJECTED_SUFFIX)


def write_rejected(
    session: Session,
    name: TableName,
    staged: Staged,
    columns: Sequence[ColumnRead],
    source: str,
    source_version: str | None,
    job_id: str | None,
) -> tuple[TableName, int]:
    """Keep every rejected row whole: its original fields as JSON text, the reasons, where it came from.

    ``row`` is the record's number among the file's records; ``line`` its line in the file (the record
    number plus the header line), as an editor shows it when no field spans lines.
    """
    target = rejected_table(name)
    session.ensure_schema(target)
    session.write(
        f'CREATE TABLE IF NOT EXISTS {target.sql} (source VARCHAR, source_version VARCHAR, "row" BIGINT, '
        'reasons VARCHAR, record VARCHAR, job_id VARCHAR, loaded_at TIMESTAMP, "line" BIGINT)'
    )
    if "line" not in {c["name"] for c in session.columns(target)}:  # a quarantine table from before lines were kept
        session.write(f'ALTER TABLE {target.sql} ADD COLUMN "line" BIGINT')
    stored = _stored(session)
    reasons = ", ".join(
        f"CASE WHEN {_alias('e', i)} IS NOT NULL THEN {sql_string(c.name + ': ')} || {_alias('e', i)} END"
        for i, c in enumerate(columns)
        if _alias("e", i).strip('"') in stored
    ) or "NULL"
    record = ", ".join(f"{sql_string(h)}, r.{quote_identifier(h)}" for h in staged.headers)
    count = session.write(
        f'INSERT INTO {target.sql} (source, source_version, "row", reasons, record, job_id, loaded_at, "line") '
        f"SELECT ?, ?, __pudato_row, concat_ws('; ', {reasons}), "
        f"CAST(json_object({record}) AS VARCHAR), ?, CAST(now() AS TIMESTAMP), __pudato_row + {staged.header_lines} "
        f"FROM {CHECKED} c JOIN {RAW} r ON r.rowid = c.__pudato_row - 1 WHERE c.__pudato_bad ORDER BY __pudato_row",
        [source, source_version, job_id],
    )
    return target, count
