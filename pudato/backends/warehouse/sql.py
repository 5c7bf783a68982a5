"""SQL text helpers shared by the DuckDB-engine warehouses: errors, literals, statement parsing.

Nothing here opens a warehouse. Parsing runs on a private in-memory instance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import duckdb

from pudato.errors import BackendUnavailable, PudatoError, QueryFailed, UnsafeInput

ENGINE = "duckdb"

# DuckDB's words for "another process (or another instance in this one) holds the file".
FILE_LOCKED = (
    "Could not set lock on file",
    "Conflicting lock is held",
    "Unique file handle conflict",
    "different configuration",
)
# The lake's words for "another writer committed first": the transaction is run again.
WRITE_CONFLICTS = (
    "Transaction conflict",
    "Failed to commit DuckLake transaction",
    "database is locked",
    "could not serialize access",
    "deadlock detected",
)
# A statement that lost the lake's catalog or data store midway: the step is retried, not failed.
CONNECTION_LOST = (
    "server closed the connection",
    "terminating connection",
    "connection to server",
    "no connection to the server",
    "Connection refused",
    "could not connect",
    "the database system is starting up",
    "the database system is shutting down",
    "SSL SYSCALL error",
)

# PostgreSQL gave up waiting for a lock on the lake's catalog (its lock_timeout, set from
# PUDATO_WAREHOUSE__LOCK_TIMEOUT_S): someone holds a catalog table. Retried, not failed.
CATALOG_LOCKED = ("due to lock timeout",)


def translate_error(exc: duckdb.Error, statement: str | None = None, scrub: tuple[str, ...] = ()) -> PudatoError:
    """DuckDB's exception as a Pudato error that keeps DuckDB's own message, minus any ``scrub`` text."""
    details: dict[str, Any] = {"engine": ENGINE, "error_type": type(exc).__name__}
    if statement is not None:
        details["statement"] = scrubbed(statement[:2000], scrub)
    text = scrubbed(str(exc), scrub)
    if isinstance(exc, duckdb.PermissionException):
        # Raised by the query sandbox: the SQL tried to reach a file it was not given.
        return UnsafeInput(f"DuckDB refused file access: {text}", **details)
    if any(marker in text for marker in CATALOG_LOCKED):
        return BackendUnavailable(
            f"the lake's catalog stayed locked past the lock timeout (PUDATO_WAREHOUSE__LOCK_TIMEOUT_S): {text}",
            **details,
        )
    if any(marker in text for marker in CONNECTION_LOST):
        return BackendUnavailable(f"the warehouse's catalog or storage went away: {text}", **details)
    return QueryFailed(f"DuckDB {type(exc).__name__}: {text}", **details)


def scrubbed(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced: DuckDB repeats connection strings in its errors."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def sql_string(text: str) -> str:
    """A single-quoted SQL literal, for the few places DuckDB takes no parameter (view bodies, COPY, ATTACH)."""
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
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error as exc:
        raise translate_error(exc, sql) from None
    tree = json.loads(row[0]) if row else {}
    if tree.get("error"):
        raise QueryFailed(
            f"DuckDB could not parse the SQL: {tree.get('error_message', 'unknown error')}", sql=sql[:200]
        )
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
