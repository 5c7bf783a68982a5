"""Typed loads on a DuckDB-engine warehouse: stage as text, parse by the rules, check, write, quarantine.

A file is first staged as text exactly as written (a temp table, one row per
record, its ``rowid`` the record number), so no value is converted before the
rules say how. Each target column then gets a parse expression (null tokens,
currency symbols, thousands and decimal separators, parenthesised negatives,
a date format) and a check (type, not-null, allowed values, pattern, unique
key). Rows that pass are written; rows that fail go whole, as JSON text of
their original fields, to the ``<table>__rejected`` quarantine table with the
reasons, in the same transaction. Nothing is coerced: a value that does not fit
its type is a rejection, never a NULL or a guess.

All of this is DuckDB's SQL dialect, so it lives here with the session, not in
the handlers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pudato.backends.warehouse import quote_identifier
from pudato.backends.warehouse.engine import load_extension
from pudato.backends.warehouse.read_errors import read_error
from pudato.backends.warehouse.session import Session
from pudato.backends.warehouse.sql import sql_string
from pudato.contracts.model import ColumnRead, TextRules
from pudato.errors import InvalidCommand, PudatoError

RAW = "pudato_load_raw"
CHECKED = "pudato_load_checked"
# DuckDB's CSV reader NULLs only this, which never occurs in text: so "" stays "" and a
# field missing from a short record is NULL, and the two can be told apart.
_PADDING = "\x01"
_INTEGERS = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "INT",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
    "INT1",
    "INT2",
    "INT4",
    "INT8",
    "SHORT",
    "LONG",
}
_FLOATS = {"DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8"}
TEXT_TYPES = {"VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR"}
_SAMPLE = 200
_ISO_DATE = "'[0-9]{4}-[0-9]{2}-[0-9]{2}'"
REJECTED_SUFFIX = "__rejected"


@dataclass
class Staged:
    """A file staged as a temp table: its headers, their types as read, and short records."""

    headers: list[str]
    types: dict[str, str]
    text: bool
    records: int
    blank: int = 0
    short: list[dict[str, int]] = field(default_factory=list)
    short_count: int = 0
    long: list[int] = field(default_factory=list)
    long_count: int = 0
    header_lines: int = 0  # lines before the first record: a record's line in the file is its number plus these


def base_type(type_: str) -> str:
    return re.split(r"[\s(]", type_.strip().upper(), maxsplit=1)[0]


def stage_file(
    session: Session,
    fmt: Literal["csv", "parquet", "json", "xlsx"],
    location: str,
    label: str,
    header: bool = True,
    delimiter: str | None = None,
    sheet: str | None = None,
    extension_dir: Path | None = None,
    header_width: int | None = None,
) -> Staged:
    """Stage the file as a temp table; CSV and spreadsheet cells stay text exactly as written."""
    if fmt == "xlsx":
        reader = _xlsx_reader(session, location, header, sheet, extension_dir)
    else:
        reader = _csv_reader(location, header, delimiter) if fmt == "csv" else Session.read_sql(fmt, location)
    try:
        session.execute(f"CREATE OR REPLACE TEMP TABLE {RAW} AS SELECT * FROM {reader}", record=False)
    except PudatoError as exc:
        raise read_error(exc, fmt, location, label) from None
    described = session.execute(f"SELECT * FROM {RAW} LIMIT 0", record=False).description
    headers = [d[0] for d in described]
    staged = Staged(
        headers, {d[0]: str(d[1]) for d in described}, fmt in ("csv", "xlsx"),
        _count(session, f"SELECT count(*) FROM {RAW}"),
    )
    staged.header_lines = int(header and fmt in ("csv", "xlsx"))
    if fmt == "csv":
        staged.blank = _count(session, f"SELECT count(*) FROM {RAW} WHERE {_blank(headers)}")
        # A record longer than the header makes DuckDB add columns; records are short against the header.
        width = header_width if header_width and header_width < len(headers) else len(headers)
        extra = headers[width:]
        if extra:
            longer = " OR ".join(f"{quote_identifier(h)} IS NOT NULL" for h in extra)
            staged.long_count = _count(session, f"SELECT count(*) FROM {RAW} WHERE {longer}")
            staged.long = [int(r) for (r,) in session.rows(
                f"SELECT rowid + 1 FROM {RAW} WHERE {longer} ORDER BY rowid LIMIT {_SAMPLE}")]
        if width > 1:
            last = quote_identifier(headers[width - 1])
            present = " + ".join(f"({quote_identifier(h)} IS NOT NULL)::INT" for h in headers[:width])
            short = f"FROM {RAW} WHERE {last} IS NULL AND NOT ({_blank(headers)})"
            staged.short_count = _count(session, f"SELECT count(*) {short}")
            staged.short = [
                {"row": int(r), "fields": int(f), "expected": width}
                for r, f in session.rows(f"SELECT rowid + 1, {present} {short} ORDER BY rowid LIMIT {_SAMPLE}")
            ]
    return staged


def _xlsx_reader(
    session: Session, location: str, header: bool, sheet: str | None, extension_dir: Path | None
) -> str:
    """DuckDB's excel extension, every cell as text; the extension is loaded from its wheel on first use."""
    if extension_dir is None:
        raise InvalidCommand("this warehouse cannot read spreadsheets; export the sheet as CSV")
    load_extension(session.con, "excel", extension_dir)
    options = [f"header = {str(header).lower()}", "all_varchar = true"]
    if sheet is not None:
        options.append(f"sheet = {sql_string(sheet)}")
    return f"read_xlsx({sql_string(location)}, {', '.join(options)})"


def _csv_reader(location: str, header: bool, delimiter: str | None) -> str:
    """Every field as text, as written; a field missing from a short record is NULL, an empty one ''."""
    options = [f"header = {str(header).lower()}", "all_varchar = true", "null_padding = true",
               f"nullstr = {sql_string(_PADDING)}"]
    if delimiter is not None:
        options.append(f"delim = {sql_string(delimiter)}")
    return f"read_csv({sql_string(location)}, {', '.join(options)})"


def csv_select(
    location: str,
    label: str,
    reads_for: Callable[[list[str]], list[ColumnRead]],
    rules: TextRules | None = None,
    key: Sequence[str] = (),
) -> str:
    """A load's reading of a CSV file as one subquery, so a query in place sees what a load stores.

    Same reader; the same columns (``reads_for`` gives the headers' columns, with
    the contract's types, formats and constraints when there is one); the same
    types, inferred from every value where none is given; the same parsing rules;
    and the same rows: blank records and rows a load would reject (a value that
    does not fit, a null, allowed value or pattern constraint broken, a ``key``
    seen earlier in the file) are left out. The inference runs on a private in-memory instance, before the query's
    sandbox is closed.
    """
    import duckdb

    rules = rules or TextRules()
    scratch = Session(duckdb.connect(":memory:"), "memory")
    try:
        staged = stage_file(scratch, "csv", location, label)
        reads = reads_for(staged.headers)
        types = infer_types(scratch, staged, reads, rules)
    finally:
        scratch.con.close()
    tokens, values, kept = [], [], []
    for i, read in enumerate(reads):
        type_, t, v = read.type or types[read.name], _alias("t", i), _alias("v", i)
        if read.source is None:
            values.append(f"CAST(NULL AS {type_}) AS {v}")
            kept += [] if read.nullable else ["false"]
            continue
        tokens.append(f"{_token(quote_identifier(read.source), True, rules)} AS {t}")
        values.append(f"CAST({parse_expression(t, type_, read.format, rules)} AS {type_}) AS {v}")
        if read.type and base_type(type_) not in TEXT_TYPES:
            kept.append(f"({t} IS NULL OR {v} IS NOT NULL)")
        if not read.nullable:
            kept.append(f"{v} IS NOT NULL")
        if read.allowed is not None:
            kept.append(f"({t} IS NULL OR {t} IN ({', '.join(sql_string(a) for a in read.allowed) or 'NULL'}))")
        if read.pattern is not None:
            kept.append(f"({t} IS NULL OR regexp_full_match({t}, {sql_string(read.pattern)}))")
    index = {r.name: i for i, r in enumerate(reads)}
    keys = [_alias("v", index[k]) for k in key if k in index]
    if keys:  # a key seen before in the file is a load's 'unique' rejection, whatever else that row holds
        present = " AND ".join(f"{k} IS NOT NULL" for k in keys)
        values.append(f"CASE WHEN {present} THEN row_number() OVER (PARTITION BY {', '.join(keys)} "
                      "ORDER BY __pudato_row) END AS __pudato_seen")
        kept.append("coalesce(__pudato_seen, 1) = 1")
    reader = _csv_reader(location, True, None)
    inner = (f"SELECT {', '.join([*tokens, 'row_number() OVER () AS __pudato_row'])} "
             f"FROM {reader} WHERE NOT ({_blank(staged.headers)})")
    where = f" WHERE {' AND '.join(kept)}" if kept else ""
    named = ", ".join(f"{_alias('v', i)} AS {quote_identifier(r.name)}" for i, r in enumerate(reads))
    return f"(SELECT {named} FROM (SELECT *, {', '.join(values)} FROM ({inner})){where})"


def not_blank(staged: Staged) -> str:
    """A WHERE clause leaving blank records out; nothing when the file has none (the common case, and cheaper)."""
    return f" WHERE NOT ({_blank(staged.headers)})" if staged.blank else ""


def _count(session: Session, sql: str) -> int:
    return int(session.rows(sql)[0][0])


def _blank(headers: Sequence[str]) -> str:
    fields = ", ".join(f"NULLIF(trim(CAST({quote_identifier(h)} AS VARCHAR)), '')" for h in headers)
    return f"COALESCE({fields}) IS NULL"


# -- parse expressions -------------------------------------------------------------


def _token(column: str, text: bool, rules: TextRules) -> str:
    """The field as text, NULL where it is a null token (or missing from a short record)."""
    if not text:
        return f"CAST({column} AS VARCHAR)"
    if not rules.null_tokens:
        return column
    words = [t for t in rules.null_tokens if t.strip()]
    if not words:  # only "": the common case, and trim() on every field would cost a quarter of the load
        return f"NULLIF({column}, '')"
    # A word token (N/A, -) also counts with spaces around it, as spreadsheets pad cells.
    tokens = ", ".join(sql_string(t) for t in [*rules.null_tokens, *(w.strip() for w in words)])
    return f"CASE WHEN {column} IN ({tokens}) OR trim({column}) IN ({tokens}) THEN NULL ELSE {column} END"


def _number(value: str, rules: TextRules) -> str:
    """Text with currency symbols and thousands separators removed, '.' as decimal point."""
    expr = f"trim({value})"
    for symbol in rules.currency:
        expr = f"replace({expr}, {sql_string(symbol)}, '')"
    if rules.thousands:
        expr = f"replace({expr}, {sql_string(rules.thousands)}, '')"
    if rules.decimal != ".":
        expr = f"replace({expr}, {sql_string(rules.decimal)}, '.')"
    expr = f"trim({expr})"
    if rules.negative_parentheses:
        expr = f"regexp_replace({expr}, '^\\((.*)\\)$', '-\\1')"
    return expr


def _unsigned(number: str) -> str:
    return f"ltrim({number}, '+-')"


def _integer_shaped(m: str) -> str:
    """``m`` (unsigned text) is digits only: translate() is far cheaper than a regular expression."""
    return f"({m} <> '' AND translate({m}, '0123456789', '') = '')"


def _decimal_shaped(m: str) -> str:
    return f"({m} NOT IN ('', '.') AND translate({m}, '0123456789', '') IN ('', '.'))"


def _scale_of(m: str) -> str:
    return f"CASE WHEN strpos({m}, '.') > 0 THEN length({m}) - strpos({m}, '.') ELSE 0 END"


def _decimal_scale(type_: str) -> int:
    found = re.search(r"\(\s*\d+\s*,\s*(\d+)\s*\)", type_)
    return int(found.group(1)) if found else 3


def parse_expression(value: str, type_: str, fmt: str | None, rules: TextRules) -> str:
    """SQL turning text ``value`` into ``type_``; NULL where it does not fit (never a guess)."""
    kind = base_type(type_)
    if kind in TEXT_TYPES:
        return f"CAST({value} AS {type_})"
    if kind in _INTEGERS:
        number = _number(value, rules)
        return f"CASE WHEN {_integer_shaped(_unsigned(number))} THEN TRY_CAST({number} AS {type_}) END"
    if kind in ("DECIMAL", "NUMERIC"):
        number, scale = _number(value, rules), _decimal_scale(type_)
        m = _unsigned(number)
        fits = f"{_decimal_shaped(m)} AND {_scale_of(m)} <= {scale}"
        return f"CASE WHEN {fits} THEN TRY_CAST({number} AS {type_}) END"
    if kind in _FLOATS:
        return f"TRY_CAST({_number(value, rules)} AS {type_})"
    if kind in ("DATE", "TIMESTAMP", "DATETIME", "TIMESTAMPTZ") and fmt:
        return f"TRY_CAST(try_strptime(trim({value}), {sql_string(fmt)}) AS {type_})"
    if kind == "DATE":
        return f"CASE WHEN regexp_full_match(trim({value}), {_ISO_DATE}) THEN TRY_CAST(trim({value}) AS DATE) END"
    return f"TRY_CAST(trim({value}) AS {type_})"


# -- inference ----------------------------------------------------------------------


def infer_types(
    session: Session, staged: Staged, columns: Sequence[ColumnRead], rules: TextRules, empty: str = "VARCHAR"
) -> dict[str, str]:
    """A type for each column without one, from every value: the narrowest that takes them all.

    Codes with leading zeros (``02``) stay text; dates are taken only in ISO form
    or in the column's declared format, so ``03/04/2011`` is never read as either.
    A sample first rules out the columns that hold text (one value that is no
    number, date or boolean is enough); the others are checked over every value
    in one pass.
    """
    found: dict[str, str] = {}
    wanted = [c for c in columns if c.type is None and c.source is not None]
    if not staged.text:
        return {c.name: staged.types[c.source or ""] for c in wanted}
    if not wanted:
        return found
    tokens = {c.name: _token(quote_identifier(c.source or ""), True, rules) for c in wanted}

    def could_be(c: ColumnRead) -> list[str]:
        """Per kind (number, date, boolean): does every sampled value fit it?"""
        t = tokens[c.name]
        dated = f"try_strptime(trim({t}), {sql_string(c.format)})" if c.format else f"TRY_CAST(trim({t}) AS DATE)"
        return [f"bool_and({t} IS NULL OR {_decimal_shaped(_unsigned(_number(t, rules)))})",
                f"bool_and({t} IS NULL OR {dated} IS NOT NULL)",
                f"bool_and({t} IS NULL OR lower(trim({t})) IN ('true', 'false'))"]

    sampled = session.rows(
        f"SELECT {', '.join(e for c in wanted for e in could_be(c))} FROM {RAW} USING SAMPLE 2048 ROWS"
    )[0]
    kinds: dict[str, tuple[bool, bool, bool]] = {}
    for n, c in enumerate(list(wanted)):
        number, date, boolean = (v is not False for v in sampled[n * 3 : n * 3 + 3])
        if not (number or date or boolean):
            found[c.name] = "VARCHAR"
            wanted.remove(c)
        kinds[c.name] = (number, date, boolean)
    if not wanted:
        return found
    texts = [f"{tokens[c.name]} AS {_alias('t', i)}" for i, c in enumerate(wanted)]
    # The unsigned number text, computed once per value.
    numbers = [f"{_unsigned(_number(_alias('t', i), rules))} AS {_alias('m', i)}" for i in range(len(wanted))]
    rows = f"SELECT {', '.join(texts)} FROM {RAW}{not_blank(staged)}"
    source = f"(SELECT *, {', '.join(numbers)} FROM ({rows}))"
    aggregates = []
    for i, c in enumerate(wanted):
        t, m = _alias("t", i), _alias("m", i)
        number, date, boolean = kinds[c.name]
        plain = f"NOT (substr({m}, 1, 1) = '0' AND substr({m}, 2, 1) BETWEEN '0' AND '9')"  # no '02' codes
        dated = (f"try_strptime(trim({t}), {sql_string(c.format)}) IS NOT NULL" if c.format
                 else f"regexp_full_match(trim({t}), {_ISO_DATE}) AND TRY_CAST(trim({t}) AS DATE) IS NOT NULL")
        point = f"strpos({m}, '.')"
        # Only the kinds the sample left open are counted over every value; the others count 0.
        aggregates += [
            f"count({t})",
            f"count(*) FILTER ({_integer_shaped(m)} AND length({m}) <= 18 AND {plain})" if number else "0",
            f"count(*) FILTER ({_decimal_shaped(m)} AND {plain})" if number else "0",
            f"coalesce(max({_scale_of(m)}), 0)" if number else "0",
            f"coalesce(max(CASE WHEN {point} > 0 THEN {point} - 1 ELSE length({m}) END), 0)" if number else "0",
            f"count(*) FILTER ({dated})" if date else "0",
            f"count(*) FILTER (lower(trim({t})) IN ('true', 'false'))" if boolean else "0",
        ]
    row = [int(v) for v in session.rows(f"SELECT {', '.join(aggregates)} FROM {source}")[0]]
    for i, c in enumerate(wanted):
        n_, ints, decs, scale, digits, dates, bools = row[i * 7 : i * 7 + 7]
        found[c.name] = _narrowest(n_, ints, decs, scale, digits, dates, bools, c.format) if n_ else empty
    return found


def _narrowest(n: int, ints: int, decs: int, scale: int, digits: int, dates: int, bools: int, fmt: str | None) -> str:
    if n == 0:
        return "VARCHAR"
    if dates == n:
        return "TIMESTAMP" if fmt and any(code in fmt for code in ("%H", "%M", "%S")) else "DATE"
    if ints == n:
        return "BIGINT"
    if decs == n and scale <= 9 and digits + scale <= 38:
        return f"DECIMAL({18 if digits + scale <= 18 else 38},{scale})"
    if bools == n:
        return "BOOLEAN"
    return "VARCHAR"


def _alias(kind: str, index: int) -> str:
    return f'"__pudato_{kind}{index}"'
