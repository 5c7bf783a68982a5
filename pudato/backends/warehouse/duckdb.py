"""The DuckDB warehouse: one database file shared by several worker processes.

A DuckDB file can be open read-write by one process at a time, and read-only
only while no process writes. So nothing here keeps a connection: every
operation opens one (:meth:`DuckDBWarehouse.connect`), and a lock conflict is
waited out with jittered backoff up to ``warehouse.lock_timeout_s`` before it
becomes :class:`~pudato.errors.BackendUnavailable`.

Each connection is a private in-memory DuckDB instance that ATTACHes the file.
Settings are per instance, so a query can be sandboxed (:meth:`Session.restrict`)
without the sandbox leaking into the next operation in the same process.
"""

from __future__ import annotations

import json

import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pudato.backends.warehouse import TableName, WarehouseBackend, quote_identifier
from pudato.errors import BackendUnavailable, ConfigurationError, PudatoError, QueryFailed, UnsafeInput
from pudato.protocol import ExecutionRecord, utcnow
from pudato.settings import Settings

log = logging.getLogger(__name__)

ENGINE = "duckdb"
# Messages DuckDB gives when another process (or another instance in this one) holds the file.
_LOCK_CONFLICTS = (
    "Could not set lock on file",
    "Conflicting lock is held",
    "Unique file handle conflict",
    "different configuration",
)
_RESERVED_CATALOGS = {"memory", "temp", "system", "main"}


def translate_error(exc: duckdb.Error, statement: str | None = None) -> PudatoError:
    """DuckDB's exception as a Pudato error that keeps DuckDB's own message."""
    details: dict[str, Any] = {"engine": ENGINE, "error_type": type(exc).__name__}
    if statement is not None:
        details["statement"] = statement[:2000]
    if isinstance(exc, duckdb.PermissionException):
        # Raised by the query sandbox: the SQL tried to reach a file it was not given.
        return UnsafeInput(f"DuckDB refused file access: {exc}", **details)
    return QueryFailed(f"DuckDB {type(exc).__name__}: {exc}", **details)


def sql_string(text: str) -> str:
    """A single-quoted SQL literal, for the few places DuckDB takes no parameter (view bodies, COPY)."""
    if "\x00" in text:
        raise UnsafeInput("text for an SQL literal contains a NUL byte")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Statement:
    type: str
    query: str


def parse_statements(sql: str) -> list[Statement]:
    """Split SQL into statements without running it (a private instance, no file opened)."""
    parser = duckdb.connect(":memory:")
    try:
        return [Statement(s.type.name, s.query) for s in parser.extract_statements(sql)]
    except duckdb.Error as exc:
        raise translate_error(exc, sql) from None
    finally:
        parser.close()


def base_tables(con: duckdb.DuckDBPyConnection, sql: str) -> list[list[str]]:
    """Every table a statement names, as [catalog, schema, table] without the empty parts; CTEs excluded."""
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    except duckdb.Error as exc:
        raise translate_error(exc, sql) from None
    if tree.get("error"):
        raise QueryFailed(f"DuckDB could not parse the SQL: {tree.get('error_message', 'unknown error')}", sql=sql[:200])
    found: list[list[str]] = []
    ctes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for entry in (node.get("cte_map") or {}).get("map", []):
                ctes.add(str(entry.get("key", "")).lower())
            if node.get("type") == "BASE_TABLE":
                parts = [node.get("catalog_name", ""), node.get("schema_name", ""), node.get("table_name", "")]
                found.append([p for p in parts if p])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree.get("statements", []))
    return [parts for parts in found if not (len(parts) == 1 and parts[0].lower() in ctes)]


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOCK_CONFLICTS)


class Session:
    """One operation's connection, recording the statements run for the step."""

    def __init__(self, con: duckdb.DuckDBPyConnection, catalog: str) -> None:
        self.con = con
        self.catalog = catalog
        self.executions: list[ExecutionRecord] = []

    def execute(
        self, sql: str, params: Sequence[Any] | None = None, *, record: bool = True
    ) -> duckdb.DuckDBPyConnection:
        """Run one statement; recorded ones become the step's ExecutionRecords."""
        started_at = utcnow()
        clock = time.perf_counter()
        try:
            result = self.con.execute(sql, params) if params else self.con.execute(sql)
        except duckdb.Error as exc:
            raise translate_error(exc, sql) from None
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

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

    def restrict(self, files: Sequence[Path] = (), directories: Sequence[Path] = ()) -> None:
        """Let SQL from a message read only ``files`` and write only below ``directories``.

        The database file itself stays usable: it was attached before the switch.
        ``lock_configuration`` stops the message's SQL from switching it back.
        """
        # SET takes no parameters; these paths are ours (storage files, temp folders), quoted as literals.
        paths = ", ".join(sql_string(str(p)) for p in files)
        folders = ", ".join(sql_string(str(d).rstrip("/") + "/") for d in directories)
        self.execute(f"SET allowed_paths = [{paths}]", record=False)
        self.execute(f"SET allowed_directories = [{folders}]", record=False)
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
        return int(self.rows(f"SELECT count(*) FROM {name.sql}")[0][0])

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
            if key in stored:
                table = stored[key]  # type: ignore[index]
                found[table.qualified] = table
        return [found[k] for k in sorted(found)]


def split_qualified(text: str) -> list[str]:
    """``a."b c".d AS x`` → ``["a", "b c", "d"]``: the name DuckDB's get_table_names reports."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j, buf = i + 1, []
            while j < n:
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            match = re.match(r'[^."\s]+', text[i:])
            if not match:
                break
            parts.append(match.group())
            i += len(match.group())
        if i < n and text[i] == ".":
            i += 1
            continue
        break
    return parts


class DuckDBWarehouse(WarehouseBackend):
    """A DuckDB file, opened per operation with lock-conflict retries."""

    kind = "duckdb"

    def __init__(
        self,
        path: Path,
        lock_timeout_s: float = 60.0,
        *,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 1.0,
    ) -> None:
        self.path = Path(path).resolve()
        self.lock_timeout_s = lock_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        if self.database_name.lower() in _RESERVED_CATALOGS:
            raise ConfigurationError(
                f"warehouse file {self.path} is named {self.database_name!r}, which DuckDB reserves; "
                "rename it (PUDATO_WAREHOUSE__PATH)",
                path=str(self.path),
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckDBWarehouse:
        return cls(settings.warehouse.path, settings.warehouse.lock_timeout_s)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose default catalog is the warehouse; always closed on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if read_only and not self.path.exists():
            # A read-only attach cannot create the file; an empty warehouse is still a warehouse.
            self._open(read_only=False).close()
        con = self._open(read_only)
        try:
            yield con
        except duckdb.Error as exc:
            raise translate_error(exc) from None
        finally:
            con.close()

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        with self.connect(read_only) as con:
            yield Session(con, self.database_name)

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = self.retry_initial_s
        attempts = 0
        while True:
            attempts += 1
            con = duckdb.connect(":memory:")
            try:
                options = " (READ_ONLY)" if read_only else ""
                con.execute(f"ATTACH {sql_string(str(self.path))} AS {quote_identifier(self.database_name)}{options}")
                con.execute(f"USE {quote_identifier(self.database_name)}")
                return con
            except duckdb.Error as exc:
                con.close()
                if not _is_lock_conflict(exc):
                    raise translate_error(exc) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendUnavailable(
                        f"warehouse file {self.path} stayed locked for {self.lock_timeout_s:g}s "
                        f"({attempts} attempts; PUDATO_WAREHOUSE__LOCK_TIMEOUT_S): {exc}",
                        path=str(self.path),
                        attempts=attempts,
                    ) from None
                log.debug("warehouse %s locked, retrying: %s", self.path, exc)
                # Jitter spreads out workers that all waited on the same writer.
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, self.retry_max_s)
