"""Warehouse backends: the SQL database the table, query and transform handlers share.

Two backends, chosen by ``PUDATO_WAREHOUSE__BACKEND`` from ``BACKENDS``:

* ``duckdb`` (:mod:`.duckdb`): one local DuckDB file. One machine; one writer at a
  time (others wait on the file lock); no versions.
* ``ducklake`` (:mod:`.ducklake`): a DuckLake. Its catalog is a PostgreSQL database
  (SQLite for the embedded demo), its data Parquet files under a prefix of the
  platform bucket. Any number of processes on any number of hosts read and write
  at once; every commit is a snapshot, so every table has versions.

Both run on DuckDB in the worker's process; the plumbing they share (extensions
from the PyPI wheels, the S3 secret, statement recording, retries) is in
:mod:`.engine` and :mod:`.session`. To add a backend, subclass
:class:`WarehouseBackend` in a module here and add it to ``BACKENDS``.

The snapshot API (for exact reruns and ``as_of`` reads):

* :meth:`WarehouseBackend.current_snapshot` -- the lake's newest snapshot id;
* :meth:`WarehouseBackend.table_version` -- a table's :class:`TableVersion`
  (snapshot id, row count, schema fingerprint), now or at a snapshot;
* :meth:`WarehouseBackend.session_at` -- a read-only session that sees the whole
  lake, or only some tables, as they were at a snapshot;
* a version that no longer exists raises :class:`~pudato.errors.SnapshotGone`,
  naming the dataset and the snapshot.

Table, schema and column names arrive in messages, so this module also holds the
rules for them: :func:`parse_table_name` refuses anything but plain identifiers,
and :func:`quote_identifier` is the only way a name reaches SQL text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pudato import datasets
from pudato.backends import load_backend
from pudato.errors import ConfigurationError, UnsafeInput
from pudato.protocol import DataReference

if TYPE_CHECKING:
    from pudato.backends.warehouse.session import Session
    from pudato.settings import Settings, WarehouseSettings

BACKENDS = {
    "duckdb": "pudato.backends.warehouse.duckdb:DuckDBWarehouse",
    "ducklake": "pudato.backends.warehouse.ducklake:DuckLakeWarehouse",
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


@dataclass(frozen=True)
class TableVersion:
    """One version of a table: what a step read or wrote.

    ``snapshot_id`` is the lake snapshot the numbers were taken at (None on a
    warehouse without versions); ``schema_fingerprint`` is the sha256 of the
    ordered (column, type) pairs.
    """

    table: str
    snapshot_id: int | None
    rows: int
    columns: list[dict[str, str]]
    schema_fingerprint: str

    def facets(self) -> dict[str, Any]:
        """The DataReference facets that carry this version (see :mod:`pudato.datasets`)."""
        found: dict[str, Any] = {
            "rows": self.rows, "columns": self.columns, "schema_fingerprint": self.schema_fingerprint
        }
        if self.snapshot_id is not None:
            found["snapshot_id"] = self.snapshot_id
        return found


class WarehouseBackend:
    """The interface every warehouse backend implements.

    Class constants say what a backend can do, so handlers ask rather than test
    the backend's kind.
    """

    kind: ClassVar[str]
    #: Every commit is a snapshot that can be read later (session_at, table_version at a snapshot).
    versioned: ClassVar[bool] = False
    #: Writers in several processes and hosts at once, without a lock.
    concurrent_writers: ClassVar[bool] = False
    #: PRIMARY KEY constraints are enforced (DuckLake has none).
    enforces_primary_keys: ClassVar[bool] = True

    @property
    def database_name(self) -> str:
        """The catalog name SQL uses for the warehouse (``SELECT * FROM {database_name}.main.t``)."""
        raise NotImplementedError

    @property
    def namespace(self) -> str:
        """The OpenLineage namespace of the warehouse's tables (see :mod:`pudato.datasets`)."""
        raise NotImplementedError

    def reference(self, table: TableName | str, **facets: Any) -> DataReference:
        qualified = table.qualified if isinstance(table, TableName) else table
        return datasets.warehouse_table(self.namespace, qualified, **facets)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A DuckDB connection for one operation, closed on exit; engine errors become Pudato errors."""
        raise NotImplementedError

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        """:meth:`connect`, wrapped to record the statements run and look up the catalogue.

        A read-only session on a versioned warehouse reads one snapshot throughout.
        """
        raise NotImplementedError

    @contextmanager
    def query_session(self, files: Sequence[str] = (), directories: Sequence[Any] = ()) -> Iterator[Session]:
        """A read-only session for SQL from a message, sandboxed to ``files`` and ``directories``."""
        raise NotImplementedError

    # -- versions (the snapshot API) ---------------------------------------------

    def current_snapshot(self) -> int | None:
        """The newest snapshot id, or None for a warehouse without versions."""
        if not self.versioned:
            return None
        with self.session(read_only=True) as session:
            return session.current_snapshot()

    def table_version(self, table: TableName | str, snapshot: int | None = None) -> TableVersion:
        """``table``'s version now, or at ``snapshot``; SnapshotGone if that version cannot be read."""
        name = parse_table_name(table) if isinstance(table, str) else table
        with self.session(read_only=True) as session:
            return session.version(name, snapshot)

    @contextmanager
    def session_at(self, snapshot: int, tables: Sequence[TableName | str] | None = None) -> Iterator[Session]:
        """A read-only session seeing the lake as it was at ``snapshot``.

        With ``tables``, only those tables are read at ``snapshot`` and every other
        table as it is now. A snapshot that is gone raises SnapshotGone naming the
        dataset(s) and the snapshot. Only versioned backends have snapshots.
        """
        raise ConfigurationError(
            f"the {self.kind} warehouse keeps no versions, so it cannot be read at snapshot {snapshot}; "
            "use PUDATO_WAREHOUSE__BACKEND=ducklake",
            backend=self.kind,
        )

    def versioned_references(
        self, references: Sequence[DataReference], snapshots: Mapping[str, int | None] | None = None
    ) -> list[DataReference]:
        """``references`` with this warehouse's tables given their version facets.

        ``snapshots`` maps a table's dataset name to the snapshot to take it at
        (default: now). Other datasets, and tables that no longer exist, pass unchanged.
        """
        raise NotImplementedError

    # -- dbt --------------------------------------------------------------------------

    def dbt_target(self, schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
        """The dbt-duckdb profile target that builds models in this warehouse."""
        raise NotImplementedError

    def dbt_attachment_at(self, snapshot: int) -> dict[str, Any]:
        """A dbt-duckdb ``attach`` entry for the warehouse as it was at ``snapshot``, read-only, under
        the alias ``attachment["alias"]``: dbt sources pointed at it read their recorded version."""
        raise ConfigurationError(
            f"the {self.kind} warehouse keeps no versions, so dbt cannot read it at snapshot {snapshot}; "
            "use PUDATO_WAREHOUSE__BACKEND=ducklake",
            backend=self.kind,
        )

    def for_build(
        self,
        catalog_user: str | None = None,
        catalog_password: str | None = None,
        s3_key_id: str | None = None,
        s3_secret: str | None = None,
    ) -> WarehouseBackend:
        """This warehouse as dbt's builds reach it, with credentials scoped to a build (given ones
        replace the platform's); a backend without such credentials returns itself."""
        return self

    def release(self) -> None:
        """Let go of anything held between operations (nothing, by default)."""


def warehouse_backend(settings: Settings) -> WarehouseBackend:
    """The backend ``settings.warehouse.backend`` names; an unknown name lists the known ones."""
    cls = load_backend("warehouse", BACKENDS, settings.warehouse.backend)
    backend: WarehouseBackend = cls.from_settings(settings)
    return backend


def instance_limits(settings: WarehouseSettings) -> dict[str, Any]:
    """The DuckDB configuration that bounds each instance: a worker must never take the whole host."""
    limits: dict[str, Any] = {"memory_limit": settings.memory_limit, "threads": settings.threads,
                              "max_temp_directory_size": settings.max_temp_directory_size}
    if settings.temp_directory is not None:
        limits["temp_directory"] = str(settings.temp_directory)
    return limits


def enforce_limits(con: Any, limits: Mapping[str, Any]) -> None:
    """Set again what an instance's config does not enforce: duckdb 1.5.5 shows a
    ``max_temp_directory_size`` given at connect but lets the temp folder's free space win."""
    if limits.get("max_temp_directory_size"):
        size = str(limits["max_temp_directory_size"]).replace("'", "''")
        con.execute(f"SET max_temp_directory_size = '{size}'")


def schema_fingerprint(columns: Sequence[dict[str, Any]]) -> str:
    """sha256 of the ordered (name, type) pairs: equal fingerprints, same table shape."""
    shape = json.dumps([[c["name"], c["type"]] for c in columns], separators=(",", ":"))
    return hashlib.sha256(shape.encode()).hexdigest()
