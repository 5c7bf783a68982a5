"""Warehouse backends: the SQL database the table, query and transform handlers share.

Every backend implements :class:`WarehouseBackend`; today there is one, DuckDB.
To add one, write a module here with a subclass and add it to ``BACKENDS``.

Table, schema and column names arrive in messages, so this module also holds the
rules for them: :func:`parse_table_name` refuses anything but plain identifiers,
and :func:`quote_identifier` is the only way a name reaches SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pudato import datasets
from pudato.backends import load_backend
from pudato.errors import UnsafeInput
from pudato.protocol import DataReference

if TYPE_CHECKING:
    from pudato.backends.warehouse.duckdb import Session
    from pudato.settings import Settings

BACKENDS = {
    "duckdb": "pudato.backends.warehouse.duckdb:DuckDBWarehouse",
}

DEFAULT_SCHEMA = "main"
_PART = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
TABLE_NAME = re.compile(rf"^{_PART}(\.{_PART})?$")
IDENTIFIER = re.compile(rf"^{_PART}$")
_COLUMN_MAX = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class TableName:
    """A checked ``schema.table`` name; ``sql`` is safe to put into a statement."""

    schema: str
    table: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def sql(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.table)}"

    def __str__(self) -> str:
        return self.qualified


def parse_table_name(text: str) -> TableName:
    """``table`` or ``schema.table`` from a message, or UnsafeInput."""
    if not isinstance(text, str) or not TABLE_NAME.match(text):
        raise UnsafeInput(
            f"table name {str(text)[:80]!r} is not allowed: use letters, digits and '_' "
            "(not starting with a digit, at most 63 each), as 'table' or 'schema.table'",
            table=str(text)[:80],
        )
    schema, _, table = text.rpartition(".")
    return TableName(schema or DEFAULT_SCHEMA, table)


def check_identifier(text: str, what: str = "identifier") -> str:
    """A bare name (schema, view alias) from a message, or UnsafeInput."""
    if not isinstance(text, str) or not IDENTIFIER.match(text):
        raise UnsafeInput(
            f"{what} {str(text)[:80]!r} is not allowed: use letters, digits and '_', "
            "not starting with a digit, at most 63 characters",
            name=str(text)[:80],
        )
    return text


def quote_identifier(name: str) -> str:
    """Double-quote a name for SQL. Column names may hold spaces, so we quote, never check."""
    if not name or len(name) > _COLUMN_MAX or _CONTROL.search(name):
        raise UnsafeInput(
            f"name {name[:80]!r} must be 1 to {_COLUMN_MAX} characters without control characters",
            name=name[:80],
        )
    return '"' + name.replace('"', '""') + '"'


class WarehouseBackend:
    """The interface every warehouse backend implements."""

    kind: ClassVar[str]
    path: Path
    lock_timeout_s: float

    @property
    def database_name(self) -> str:
        """The database part of dataset names (OpenLineage namespace ``duckdb://{database}``)."""
        return self.path.stem

    def reference(self, table: TableName | str, **facets: Any) -> DataReference:
        qualified = table.qualified if isinstance(table, TableName) else table
        return datasets.duckdb_table(self.database_name, qualified, **facets)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A connection for one operation, closed on exit; engine errors become Pudato errors."""
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        """:meth:`connect`, wrapped to record the statements run and look up the catalogue."""
        raise NotImplementedError
        yield  # pragma: no cover


def warehouse_backend(settings: Settings) -> WarehouseBackend:
    # The warehouse has one engine today; the alias table keeps the door open.
    cls = load_backend("warehouse", BACKENDS, "duckdb")
    return cls.from_settings(settings)
