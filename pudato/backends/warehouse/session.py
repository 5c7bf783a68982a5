"""One operation's connection to a DuckDB-engine warehouse, and the SQL the handlers need of it.

A :class:`Session` records the statements it runs (they become the step's
ExecutionRecords), looks names up in the catalogue, and holds every piece of
SQL that is DuckDB's own dialect: the file readers, ``INSERT ... BY NAME``,
``MERGE``, ``COPY``, ``CREATE OR REPLACE``. Handlers call these methods and
never write engine-specific SQL themselves.

Writes go through :meth:`Session.atomic`: the body runs in a transaction, and a
write conflict (another process committed to the same table first) rolls it back
and runs the body again after a jittered pause. Nothing half-done is committed,
so a retried load never loses or doubles a row.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb

from pudato import deadline
from pudato.backends.warehouse import TableName, TableVersion, quote_identifier, schema_fingerprint
from pudato.backends.warehouse.sql import (
    ENGINE,
    base_tables,
    split_qualified,
    sql_string,
    translate_error,
)
from pudato.backoff import Backoff
from pudato.errors import BackendUnavailable, InvalidCommand, PudatoError, SnapshotGone
from pudato.protocol import ExecutionRecord, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]
FileFormat = Literal["csv", "parquet", "json"]


class WriteConflict(BackendUnavailable):
    """Another transaction changed what this one changes; the whole transaction may be run again."""


@dataclass(frozen=True)
class CsvRead:
    """How to read a CSV file: the options a load may set."""

    header: bool = True
    all_varchar: bool = False
    delimiter: str | None = None
    # Sniff types over the whole file, so a late "N/A" cannot break a load halfway.
    whole_file_types: bool = True


@dataclass
class Policy:
    """What a backend tells its sessions: which errors are worth a retry, and for how long."""

    transient_markers: tuple[str, ...] = ()
    retry_timeout_s: float = 60.0
    retry_initial_s: float = 0.05
    retry_max_s: float = 2.0
    versioned: bool = False
    readable: list[str] = field(default_factory=list)
    scrub: tuple[str, ...] = ()


class Session:
    """One operation's connection, recording the statements run for the step."""

    def __init__(self, con: duckdb.DuckDBPyConnection, catalog: str, policy: Policy | None = None) -> None:
        self.con = con
        self.catalog = catalog
        self.policy = policy or Policy()
        self.executions: list[ExecutionRecord] = []
        self._in_transaction = False

    # -- running statements --------------------------------------------------

    def execute(
        self, sql: str, params: Sequence[Any] | None = None, *, record: bool = True
    ) -> duckdb.DuckDBPyConnection:
        """Run one statement; recorded ones become the step's ExecutionRecords."""
        started_at = utcnow()
        clock = time.perf_counter()
        with self.engine_call(sql):
            result = self.con.execute(sql, params) if params else self.con.execute(sql)
        if record:
            self.executions.append(
                ExecutionRecord(
                    engine=ENGINE,
                    statement=sql,
                    started_at=started_at,
                    duration_ms=(time.perf_counter() - clock) * 1000,
                )
            )
        return result

    @contextmanager
    def engine_call(self, sql: str | None = None) -> Iterator[None]:
        """Around a call into DuckDB (a statement, or fetching its streamed rows): errors translated."""
        try:  # Celery's soft time limit cannot reach into DuckDB's native code: interrupt it ourselves
            with deadline.interrupt_at_deadline(self.con.interrupt):
                yield
        except duckdb.InterruptException:
            raise deadline.exceeded("the statement") from None
        except duckdb.Error as exc:
            raise self._error(exc, sql) from None

    def write(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Run a recorded statement that changes data; returns the rows it touched."""
        row = self.execute(sql, params).fetchone()
        # DML reports a count; DDL reports nothing, and "no count" is not "zero rows".
        count = int(row[0]) if row and isinstance(row[0], int) else None
        self.executions[-1].rows = count
        return count or 0

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """A catalogue look-up: not recorded, it is bookkeeping rather than the step's work."""
        return self.execute(sql, params, record=False).fetchall()

    def _error(self, exc: duckdb.Error, sql: str | None = None) -> PudatoError:
        text = str(exc)
        if any(marker in text for marker in self.policy.transient_markers):
            return WriteConflict(f"warehouse write conflict: {text[:500]}", engine=ENGINE)
        return translate_error(exc, sql, self.policy.scrub)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction, no retry; prefer :meth:`atomic` for writes."""
        self.con.begin()
        self._in_transaction = True
        try:
            yield
        except BaseException:
            self._in_transaction = False
            self.con.rollback()
            raise
        self._in_transaction = False
        try:
            self.con.commit()
        except duckdb.Error as exc:
            raise self._error(exc, "COMMIT") from None

    def atomic(self, body: Callable[[Session], T]) -> T:
        """Run ``body`` in a transaction; on a write conflict, roll back, wait (jittered) and run it again.

        Retries stop after ``policy.retry_timeout_s``; the conflict then becomes
        BackendUnavailable, which the worker retries later as a transient error.
        Statements of abandoned attempts are dropped from the step's record.
        """
        policy = self.policy
        backoff = Backoff(policy.retry_initial_s, policy.retry_max_s, policy.retry_timeout_s)
        recorded = len(self.executions)
        while True:
            try:
                with self.transaction():
                    return body(self)
            except WriteConflict as exc:
                del self.executions[recorded:]
                log.info("write conflict, attempt %d; retrying: %s", backoff.attempts + 1, exc.message[:200])
                if not backoff.wait():
                    raise BackendUnavailable(
                        f"{exc.message} (still conflicting after {backoff.attempts} attempts)",
                        attempts=backoff.attempts,
                    ) from None

    def restrict(self, files: Sequence[Path | str] = (), directories: Sequence[Path | str] = ()) -> None:
        """Let SQL from a message read only ``files`` and write only below ``directories``.

        The warehouse stays usable: it was attached before the switch, and its own
        data folder (the lake's) is added to the readable places.
        ``lock_configuration`` stops the message's SQL from switching it back.
        """
        # SET takes no parameters; these paths are ours (storage files, temp folders), quoted as literals.
        paths = ", ".join(sql_string(str(p)) for p in files)
        folders = [str(d).rstrip("/") + "/" for d in directories] + list(self.policy.readable)
        self.execute(f"SET allowed_paths = [{paths}]", record=False)
        self.execute(f"SET allowed_directories = [{', '.join(sql_string(f) for f in folders)}]", record=False)
        self.execute("SET enable_external_access = false", record=False)
        self.execute("SET lock_configuration = true", record=False)

    # -- catalogue -----------------------------------------------------------

    def find(self, name: TableName, views: bool = False) -> tuple[TableName, str] | None:
        """The stored spelling and kind ("table"/"view") of a name; DuckDB matches names case-insensitively."""
        sql = (
            "SELECT schema_name, table_name, 'table' FROM duckdb_tables() "
            "WHERE database_name = ? AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)"
        )
        params = [self.catalog, name.schema, name.table]
        if views:
            sql += (
                " UNION ALL SELECT schema_name, view_name, 'view' FROM duckdb_views() "
                "WHERE database_name = ? AND NOT temporary AND lower(schema_name) = lower(?) "
                "AND lower(view_name) = lower(?)"
            )
            params += params
        found = self.rows(sql, params)
        return (TableName(found[0][0], found[0][1]), found[0][2]) if found else None

    def columns(self, name: TableName) -> list[dict[str, Any]]:
        found = self.rows(
            "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
            "WHERE database_name = ? AND schema_name = ? AND table_name = ? ORDER BY column_index",
            [self.catalog, name.schema, name.table],
        )
        return [{"name": n, "type": t, "nullable": bool(nullable)} for n, t, nullable in found]

    def count(self, name: TableName) -> int:
        return int(self.rows(f"SELECT count(*) FROM {self._qualified(name)}")[0][0])

    def relations(self, schema: str | None = None) -> list[tuple[TableName, str]]:
        """Tables and views stored in the warehouse (not temporary ones)."""
        found = self.rows(
            "SELECT schema_name, table_name, 'table' FROM duckdb_tables() "
            "WHERE database_name = ? AND NOT temporary AND (? IS NULL OR lower(schema_name) = lower(?)) "
            "UNION ALL SELECT schema_name, view_name, 'view' FROM duckdb_views() "
            "WHERE database_name = ? AND NOT temporary AND NOT internal "
            "AND (? IS NULL OR lower(schema_name) = lower(?)) ORDER BY 1, 2",
            [self.catalog, schema, schema] * 2,
        )
        return [(TableName(s, t), kind) for s, t, kind in found]

    def tables_read(self, sql: str, skip: Sequence[str] = ()) -> list[TableName]:
        """Stored tables and views a statement reads; names in ``skip`` (temp views) are left out."""
        # From the parse tree, not get_table_names(): that binds the query and fails on
        # valid SQL such as ``a join b using (code)`` (duckdb 1.5.5).
        names = [".".join(parts) for parts in base_tables(self.con, sql)]
        stored = {(t.schema.lower(), t.table.lower()): t for t, _ in self.relations()}
        skipped = {s.lower() for s in skip}
        found: dict[str, TableName] = {}
        for text in names:
            parts = [p.lower() for p in split_qualified(text)]
            key: tuple[str, str] | None = None
            if len(parts) == 1 and parts[0] not in skipped:
                key = ("main", parts[0])
            elif len(parts) == 2:
                key = (parts[0], parts[1]) if (parts[0], parts[1]) in stored else None
                if key is None and parts[0] == self.catalog.lower():
                    key = ("main", parts[1])
            elif len(parts) == 3 and parts[0] == self.catalog.lower():
                key = (parts[1], parts[2])
            if key is not None and key in stored:
                table = stored[key]
                found[table.qualified] = table
        return [found[k] for k in sorted(found)]

    # -- versions ------------------------------------------------------------

    def current_snapshot(self) -> int | None:
        """The lake snapshot this session reads (None when the warehouse keeps no versions)."""
        if not self.policy.versioned:
            return None
        return int(self.rows(f"SELECT id FROM {quote_identifier(self.catalog)}.current_snapshot()")[0][0])

    def version(self, name: TableName, snapshot: int | None = None) -> TableVersion:
        """The table's row count and schema at ``snapshot`` (default: the one this session reads)."""
        if snapshot is None:
            snapshot = self.current_snapshot()
        at = f" AT (VERSION => {int(snapshot)})" if snapshot is not None and self.policy.versioned else ""
        relation = f"{self._qualified(name)}{at}"
        try:
            described = self.execute(f"SELECT * FROM {relation} LIMIT 0", record=False).description
            rows = int(self.rows(f"SELECT count(*) FROM {relation}")[0][0])
        except PudatoError as exc:
            if at and ("does not exist at version" in exc.message or "No snapshot found" in exc.message):
                raise SnapshotGone(name.qualified, snapshot) from None
            raise
        columns = [{"name": d[0], "type": str(d[1])} for d in described]
        return TableVersion(name.qualified, snapshot, rows, columns, schema_fingerprint(columns))

    def _qualified(self, name: TableName) -> str:
        return f"{quote_identifier(self.catalog)}.{name.sql}"

    # -- reading files -------------------------------------------------------

    @staticmethod
    def read_sql(fmt: FileFormat, location: str, csv: CsvRead | None = None) -> str:
        """The table function reading ``location`` (a local path or an s3:// URL we chose), as SQL text.

        The location goes in as a quoted literal: a view body cannot hold a parameter.
        """
        if fmt == "parquet":
            return f"read_parquet({sql_string(location)})"
        if fmt == "json":
            return f"read_json_auto({sql_string(location)})"
        if csv is None:
            return f"read_csv_auto({sql_string(location)})"
        options = [f"header = {str(csv.header).lower()}", f"all_varchar = {str(csv.all_varchar).lower()}"]
        if csv.delimiter is not None:
            options.append(f"delim = {sql_string(csv.delimiter)}")
        if csv.whole_file_types and not csv.all_varchar:
            options.append("sample_size = -1")
        return f"read_csv({sql_string(location)}, {', '.join(options)})"

    def copy_to(self, sql: str, fmt: Literal["parquet", "csv"], target: Path) -> tuple[list[dict[str, str]], int]:
        """COPY the whole result of ``sql`` to a local file; returns its columns and row count."""
        described = self.execute(f"SELECT * FROM (\n{sql}\n) LIMIT 0", record=False).description
        options = "FORMAT parquet" if fmt == "parquet" else "FORMAT csv, HEADER true"
        # Newlines around the SQL: a trailing "-- comment" cannot swallow the closing parenthesis.
        rows = self.write(f"COPY (\n{sql}\n) TO {sql_string(str(target))} ({options})")
        return [{"name": d[0], "type": str(d[1])} for d in described], rows

    # -- writing tables ------------------------------------------------------

    def ensure_schema(self, name: TableName) -> None:
        if name.schema != "main":
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(name.schema)}")

    def create_table(self, name: TableName, columns: dict[str, str], primary_key: Sequence[str] = ()) -> None:
        definitions = [f"{quote_identifier(c)} {t}" for c, t in columns.items()]
        if primary_key:
            definitions.append(f"PRIMARY KEY ({', '.join(map(quote_identifier, primary_key))})")
        self.write(f"CREATE TABLE {name.sql} ({', '.join(definitions)})")

    def replace_with(self, name: TableName, query: str, params: Sequence[Any] | None = None) -> int:
        """Create (or replace) the table with the rows of ``query``; returns the rows written."""
        return self.write(f"CREATE OR REPLACE TABLE {name.sql} AS {query}", params)

    def append(self, name: TableName, query: str, params: Sequence[Any] | None = None) -> int:
        """Insert the rows of ``query``, matching columns by name; returns the rows written."""
        return self.write(f"INSERT INTO {name.sql} BY NAME {query}", params)

    def drop_table(self, name: TableName) -> None:
        self.write(f"DROP TABLE {name.sql}")

    def insert_rows(self, target_sql: str, types: dict[str, str], rows: Sequence[Row]) -> int:
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
            inserted += self.write(sql, [document, structure])
        return inserted

    def upsert(
        self, name: TableName, types: dict[str, str], keys: Sequence[str], rows: Sequence[Row]
    ) -> tuple[int, int]:
        """Stage rows in a temp table shaped like the target, then MERGE: (inserted, updated).

        MERGE updates only the columns a row carries, so an upsert never blanks a column
        it did not mention (a delete-then-insert would). Rows mentioning different
        columns are merged in separate groups for the same reason.
        """
        stage = '"pudato_upsert_stage"'
        key_list = ", ".join(quote_identifier(k) for k in keys)
        self.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {key_list} FROM {name.sql} LIMIT 0", record=False)
        self.insert_rows(stage, types, [{k: row[k] for k in keys} for row in rows])
        repeated = self.rows(f"SELECT count(*) FROM (SELECT {key_list} FROM {stage} GROUP BY ALL HAVING count(*) > 1)")
        if repeated[0][0]:
            raise InvalidCommand(f"rows repeat a key ({list(keys)}); each key may appear once per upsert")
        on = " AND ".join(f"t.{quote_identifier(k)} = s.{quote_identifier(k)}" for k in keys)
        updated = 0
        for order, group in _by_columns(rows).items():
            quoted = [quote_identifier(c) for c in order]
            self.execute(
                f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {', '.join(quoted)} FROM {name.sql} LIMIT 0",
                record=False,
            )
            self.insert_rows(stage, types, group)
            # Keys are unique across the payload, so counting before each group's MERGE is exact.
            matched = f"SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {name.sql} t WHERE {on})"
            updated += self.rows(matched)[0][0]
            updates = [f"{q} = s.{q}" for c, q in zip(order, quoted, strict=False) if c not in keys]
            when_matched = f" WHEN MATCHED THEN UPDATE SET {', '.join(updates)}" if updates else ""
            self.write(
                f"MERGE INTO {name.sql} AS t USING {stage} AS s ON ({on}){when_matched} "
                f"WHEN NOT MATCHED THEN INSERT ({', '.join(quoted)}) VALUES ({', '.join('s.' + q for q in quoted)})"
            )
        self.execute(f"DROP TABLE {stage}", record=False)
        return len(rows) - int(updated), int(updated)


def _by_columns(rows: Sequence[Row]) -> dict[tuple[str, ...], list[Row]]:
    """Rows grouped by the columns they mention, so none is written as NULL unasked."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups
