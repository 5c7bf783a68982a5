"""The table handler: create, load, insert, upsert, describe, list and drop warehouse tables.

Names in payloads are checked (:func:`~pudato.backends.warehouse.parse_table_name`)
and quoted; values always travel as statement parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pudato.backends.warehouse import (
    TableName,
    check_identifier,
    parse_table_name,
    quote_identifier,
)
from pudato.backends.warehouse.duckdb import Session
from pudato.errors import InvalidCommand, NotFound
from pudato.handlers.base import Payload, action
from pudato.handlers.csv_options import Format, check_encoding, format_for, normalize_names, utf8_file
from pudato.handlers.warehouse import WarehouseHandler
from pudato.protocol import Command, DataReference, Event, Outcome

_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ,()\[\]]*$")  # no quotes, dashes or semicolons: nothing to smuggle SQL in
_MAX_ROWS = 10_000

Row = dict[str, Any]


class TablePayload(Payload):
    table: str

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        parse_table_name(value)  # UnsafeInput, not a validation error: the name was refused
        return value


class CreatePayload(TablePayload):
    columns: dict[str, str] = Field(min_length=1)
    primary_key: list[str] = Field(default_factory=list)
    if_not_exists: bool = False

    @field_validator("columns")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        for column, type_ in value.items():
            if not _TYPE.match(type_) or len(type_) > 100:
                raise ValueError(f"column {column!r} has type {type_!r}, which is not a plain DuckDB type")
        return value


class LoadPayload(TablePayload):
    key: str
    format: Format | None = None
    mode: Literal["replace", "append"] = "replace"
    # CSV only:
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    header: bool = True
    encoding: str = "auto"
    all_varchar: bool = False
    # Every format:
    normalize_headers: bool = True
    skip_blank_records: bool = True

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return check_encoding(value)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and value in "\"'\r\n\x00":
            raise ValueError(f"{value!r} cannot be a delimiter")
        return value


class RowsPayload(TablePayload):
    rows: list[Row] = Field(min_length=1, max_length=_MAX_ROWS)


class UpsertPayload(RowsPayload):
    key: list[str] = Field(min_length=1)


class ListPayload(Payload):
    schema_: str | None = Field(default=None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: str | None) -> str | None:
        return check_identifier(value, "schema") if value is not None else None


class DropPayload(TablePayload):
    if_exists: bool = False


class TableHandler(WarehouseHandler):
    """Warehouse tables: each action opens the warehouse once and closes it before returning."""

    name = "table"

    @action("create", CreatePayload)
    def create(self, payload: CreatePayload) -> Outcome:
        name = parse_table_name(payload.table)
        missing = [k for k in payload.primary_key if k not in payload.columns]
        if missing:
            raise InvalidCommand(f"primary_key names columns not in columns: {missing}")
        definitions = [f"{quote_identifier(c)} {t}" for c, t in payload.columns.items()]
        if payload.primary_key:
            definitions.append(f"PRIMARY KEY ({', '.join(map(quote_identifier, payload.primary_key))})")
        with self.warehouse.session() as session:
            existing = session.find(name, views=True)
            if existing and payload.if_not_exists:
                return self._unchanged(session, *existing)
            if existing:
                raise InvalidCommand(f"table {existing[0]} already exists; set if_not_exists to accept that")
            with session.transaction():
                self._ensure_schema(session, name)
                session.write(f"CREATE TABLE {name.sql} ({', '.join(definitions)})")
            output = self._reference(session, name)
        return Outcome(
            outputs=[output],
            executions=session.executions,
            data={"table": name.qualified, "created": True, "columns": output.facets["columns"]},
            events=[Event(type="table.created", dataset=output)],
        )

    @action("load", LoadPayload)
    def load(self, payload: LoadPayload, command: Command) -> Outcome:
        name = parse_table_name(payload.table)
        version = self.pinned_version(payload.key, command)
        info = self.storage.head(payload.key, version)  # first: it refuses an unsafe key
        fmt = format_for(payload.key, payload.format)
        source = self.storage.reference(payload.key, info)
        with ExitStack() as stack:
            path = stack.enter_context(self.storage.local_path(payload.key, version))
            encoding = None
            if fmt == "csv":
                path, encoding = stack.enter_context(utf8_file(path, payload.encoding))
            reader, params = _reader(fmt, path, payload)
            with self.warehouse.session() as session:
                described = session.execute(f"SELECT * FROM {reader} LIMIT 0", params, record=False).description
                originals = [column[0] for column in described]
                names = normalize_names(originals) if payload.normalize_headers else originals
                select = ", ".join(f"{quote_identifier(o)} AS {quote_identifier(n)}" for o, n in zip(originals, names))
                where = _not_blank(originals) if payload.skip_blank_records else ""
                query = f"SELECT {select} FROM {reader}{where}"
                with session.transaction():
                    exists = session.find(name)
                    if payload.mode == "append" and exists:
                        name = exists[0]
                        loaded = session.write(f"INSERT INTO {name.sql} BY NAME {query}", params)
                    else:
                        self._ensure_schema(session, name)
                        loaded = session.write(f"CREATE OR REPLACE TABLE {name.sql} AS {query}", params)
                output = self._reference(session, name, source_sha256=info.sha256, source=source.uri)
        renamed = {o: n for o, n in zip(originals, names) if o != n}
        return Outcome(
            inputs=[source],
            outputs=[output],
            executions=session.executions,
            data={
                "table": name.qualified,
                "mode": payload.mode,
                "format": fmt,
                "encoding": encoding,
                "loaded": loaded,
                "rows": output.facets["rows"],
                "columns": output.facets["columns"],
                "renamed": renamed,
            },
            events=[Event(type="table.loaded", dataset=output, detail={"loaded": loaded, "mode": payload.mode})],
        )

    @action("insert", RowsPayload)
    def insert(self, payload: RowsPayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session() as session:
            name, types, rows = self._matched_rows(session, name, payload.rows)
            with session.transaction():
                inserted = _insert_rows(session, name.sql, types, rows)
            output = self._reference(session, name)
        return Outcome(
            outputs=[output],
            executions=session.executions,
            data={"table": name.qualified, "inserted": inserted, "rows": output.facets["rows"]},
            events=[Event(type="table.loaded", dataset=output, detail={"inserted": inserted})],
        )

    @action("upsert", UpsertPayload)
    def upsert(self, payload: UpsertPayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session() as session:
            name, types, rows = self._matched_rows(session, name, payload.rows, required=payload.key)
            stored = {_fold(c): c for c in types}
            keys = [stored[_fold(k)] for k in payload.key]
            for number, row in enumerate(rows, start=1):
                if any(row.get(k) is None for k in keys):
                    raise InvalidCommand(f"row {number} has no value for a key column {keys}", row=number)
            with session.transaction():
                inserted, updated = _merge(session, name, types, keys, rows)
            output = self._reference(session, name)
        return Outcome(
            outputs=[output],
            executions=session.executions,
            data={"table": name.qualified, "inserted": inserted, "updated": updated, "rows": output.facets["rows"]},
            events=[Event(type="table.loaded", dataset=output, detail={"inserted": inserted, "updated": updated})],
        )

    @action("describe", TablePayload)
    def describe(self, payload: TablePayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session(read_only=True) as session:
            name, kind = self._require(session, name, views=True)
            reference = self._reference(session, name, kind=kind)
        return Outcome(
            inputs=[reference],
            data={"table": name.qualified, "kind": kind, **reference.facets},
        )

    @action("list", ListPayload)
    def list(self, payload: ListPayload) -> Outcome:
        with self.warehouse.session(read_only=True) as session:
            found = [
                {"table": n.qualified, "kind": kind, **({"rows": session.count(n)} if kind == "table" else {})}
                for n, kind in session.relations(payload.schema_)
            ]
        return Outcome(data={"database": self.warehouse.database_name, "tables": found})

    @action("drop", DropPayload)
    def drop(self, payload: DropPayload) -> Outcome:
        name = parse_table_name(payload.table)
        with self.warehouse.session() as session:
            existing = session.find(name)
            if existing is None and payload.if_exists:
                return Outcome(data={"table": name.qualified, "dropped": False})
            name, _ = self._require(session, name)
            reference = self._reference(session, name)
            session.write(f"DROP TABLE {name.sql}")
        return Outcome(
            inputs=[reference],
            executions=session.executions,
            data={"table": name.qualified, "dropped": True},
            events=[Event(type="table.dropped", dataset=self.warehouse.reference(name))],
        )

    # -- helpers -------------------------------------------------------------

    def _reference(self, session: Session, name: TableName, **facets: Any) -> DataReference:
        columns = [{"name": c["name"], "type": c["type"]} for c in session.columns(name)]
        # Counting a view would run it; only stored tables get a row count.
        if facets.get("kind", "table") == "table":
            facets["rows"] = session.count(name)
        facets["columns"] = columns
        return self.warehouse.reference(name, **{k: v for k, v in facets.items() if v is not None})

    def _unchanged(self, session: Session, name: TableName, kind: str) -> Outcome:
        output = self._reference(session, name, kind=kind)
        return Outcome(outputs=[output], data={"table": name.qualified, "kind": kind, "created": False})

    @staticmethod
    def _require(session: Session, name: TableName, views: bool = False) -> tuple[TableName, str]:
        found = session.find(name, views=views)
        if found is None:
            raise NotFound(f"table {name} does not exist in the warehouse", table=name.qualified)
        return found

    def _matched_rows(
        self, session: Session, name: TableName, rows: Sequence[Row], required: Sequence[str] = ()
    ) -> tuple[TableName, dict[str, str], list[Row]]:
        """The table's stored name, its column types, and the rows keyed by stored column names.

        Payload names match columns case-insensitively, as DuckDB's do; unknown ones are refused.
        """
        name, _ = self._require(session, name)
        types = {c["name"]: c["type"] for c in session.columns(name)}
        stored = {_fold(c): c for c in types}
        asked = {k for row in rows for k in row} | set(required)
        unknown = sorted(k for k in asked if _fold(k) not in stored)
        if unknown:
            raise InvalidCommand(
                f"table {name} has no column(s) {unknown}; it has {sorted(types)}",
                table=name.qualified,
            )
        return name, types, [{stored[_fold(k)]: v for k, v in row.items()} for row in rows]

    @staticmethod
    def _ensure_schema(session: Session, name: TableName) -> None:
        if name.schema != "main":
            session.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(name.schema)}")


def _fold(name: str) -> str:
    # DuckDB matches identifiers case-insensitively, so payloads may too.
    return name.lower()


def _reader(fmt: Format, path: Path, payload: LoadPayload) -> tuple[str, list[Any]]:
    """The table function that reads the file, and its parameters."""
    if fmt == "parquet":
        return "read_parquet(?)", [str(path)]
    if fmt == "json":
        return "read_json_auto(?)", [str(path)]
    options = ["header = ?", "all_varchar = ?"]
    params: list[Any] = [str(path), payload.header, payload.all_varchar]
    if payload.delimiter is not None:
        options.append("delim = ?")
        params.append(payload.delimiter)
    if not payload.all_varchar:
        # Sniff types over the whole file, so a late "N/A" cannot break the load halfway.
        options.append("sample_size = -1")
    return f"read_csv(?, {', '.join(options)})", params


def _not_blank(columns: Sequence[str]) -> str:
    """WHERE clause keeping rows with at least one non-NULL, non-empty field."""
    fields = ", ".join(f"NULLIF(CAST({quote_identifier(c)} AS VARCHAR), '')" for c in columns)
    return f" WHERE COALESCE({fields}) IS NOT NULL"


def _by_columns(rows: Sequence[Row]) -> dict[tuple[str, ...], list[Row]]:
    """Rows grouped by the columns they mention, so none is written as NULL unasked."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups


def _insert_rows(session: Session, target_sql: str, types: dict[str, str], rows: Sequence[Row]) -> int:
    """INSERT rows passed as one JSON parameter per group of rows; left-out columns get their default.

    One JSON document converted by DuckDB is ~50x faster than thousands of VALUES
    parameters, and ``json_transform_strict`` fails loudly on a value that does not fit.
    """
    inserted = 0
    for order, group in _by_columns(rows).items():
        structure = json.dumps([{c: types[c] for c in order}])
        document = json.dumps(group, default=str, allow_nan=False)
        fields = ", ".join(f"r.{quote_identifier(c)}" for c in order)
        sql = (
            f"INSERT INTO {target_sql} ({', '.join(quote_identifier(c) for c in order)}) "
            f"SELECT {fields} FROM (SELECT unnest(json_transform_strict(?::JSON, ?)) AS r)"
        )
        inserted += session.write(sql, [document, structure])
    return inserted


def _merge(
    session: Session, name: TableName, types: dict[str, str], keys: Sequence[str], rows: Sequence[Row]
) -> tuple[int, int]:
    """Stage rows in a temp table shaped like the target, then MERGE: (inserted, updated).

    MERGE updates only the columns a row carries, so an upsert never blanks a column
    it did not mention (a delete-then-insert would). Rows mentioning different
    columns are merged in separate groups for the same reason.
    """
    stage = '"pudato_upsert_stage"'
    key_list = ", ".join(quote_identifier(k) for k in keys)
    session.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {key_list} FROM {name.sql} LIMIT 0", record=False)
    _insert_rows(session, stage, types, [{k: row[k] for k in keys} for row in rows])
    repeated = session.rows(f"SELECT count(*) FROM (SELECT {key_list} FROM {stage} GROUP BY ALL HAVING count(*) > 1)")
    if repeated[0][0]:
        raise InvalidCommand(f"rows repeat a key ({list(keys)}); each key may appear once per upsert")
    on = " AND ".join(f"t.{quote_identifier(k)} = s.{quote_identifier(k)}" for k in keys)
    updated = 0
    for order, group in _by_columns(rows).items():
        quoted = [quote_identifier(c) for c in order]
        session.execute(
            f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {', '.join(quoted)} FROM {name.sql} LIMIT 0", record=False
        )
        _insert_rows(session, stage, types, group)
        # Keys are unique across the payload, so counting before each group's MERGE is exact.
        matched = f"SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {name.sql} t WHERE {on})"
        updated += session.rows(matched)[0][0]
        updates = [f"{q} = s.{q}" for c, q in zip(order, quoted) if c not in keys]
        when_matched = f" WHEN MATCHED THEN UPDATE SET {', '.join(updates)}" if updates else ""
        session.write(
            f"MERGE INTO {name.sql} AS t USING {stage} AS s ON ({on}){when_matched} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(quoted)}) VALUES ({', '.join('s.' + q for q in quoted)})"
        )
    session.execute(f"DROP TABLE {stage}", record=False)
    return len(rows) - int(updated), int(updated)
