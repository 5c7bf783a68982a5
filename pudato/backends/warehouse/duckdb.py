"""The DuckDB warehouse: one database file shared by the worker processes of one machine.

A DuckDB file can be open read-write by one process at a time, and read-only
only while no process writes. So nothing here keeps a connection: every
operation opens one, and a lock conflict is waited out with jittered backoff up
to ``warehouse.lock_timeout_s`` before it becomes
:class:`~pudato.errors.BackendUnavailable`. No versions are kept; for several
hosts, concurrent writers and snapshots use :mod:`.ducklake`.

Each connection is a private in-memory DuckDB instance that ATTACHes the file
(:mod:`.engine`). Settings are per instance, so a query can be sandboxed
(:meth:`Session.restrict`) without the sandbox leaking into the next operation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from pudato import datasets
from pudato.backends.warehouse import DEFAULT_SCHEMA, instance_limits, quote_identifier
from pudato.backends.warehouse.engine import DuckDBEngine
from pudato.backends.warehouse.session import Session
from pudato.backends.warehouse.sql import (
    ENGINE,
    FILE_LOCKED,
    Statement,
    base_tables,
    parse_statements,
    split_qualified,
    sql_string,
    translate_error,
)
from pudato.errors import ConfigurationError
from pudato.settings import Settings

__all__ = [
    "ENGINE", "DuckDBWarehouse", "Session", "Statement", "base_tables", "parse_statements", "split_qualified",
    "sql_string", "translate_error",
]  # fmt: skip

_RESERVED_CATALOGS = {"memory", "temp", "system", "main"}


class DuckDBWarehouse(DuckDBEngine):
    """A DuckDB file, opened per operation with lock-conflict retries."""

    kind = "duckdb"
    open_markers = FILE_LOCKED

    def __init__(
        self,
        path: Path,
        lock_timeout_s: float = 60.0,
        *,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 1.0,
        extension_dir: Path | None = None,
        aws: Any = None,
    ) -> None:
        self.path = Path(path).resolve()
        super().__init__(
            extension_dir=extension_dir or self.path.parent / "duckdb_extensions",
            aws=aws,
            lock_timeout_s=lock_timeout_s,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
        )
        if self.database_name.lower() in _RESERVED_CATALOGS:
            raise ConfigurationError(
                f"warehouse file {self.path} is named {self.database_name!r}, which DuckDB reserves; "
                "rename it (PUDATO_WAREHOUSE__PATH)",
                path=str(self.path),
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckDBWarehouse:
        warehouse = cls(
            settings.warehouse.path,
            settings.warehouse.lock_timeout_s,
            extension_dir=settings.warehouse.extension_dir,
            aws=settings.aws if settings.storage.backend == "s3" else None,
        )
        warehouse.limits = instance_limits(settings.warehouse)
        return warehouse

    @property
    def database_name(self) -> str:
        return self.path.stem

    @property
    def location(self) -> str:
        return str(self.path)

    def _where(self) -> dict[str, str]:
        return {"path": str(self.path)}

    @property
    def namespace(self) -> str:
        return datasets.duckdb_namespace(self.database_name)

    def _attach(self, con: duckdb.DuckDBPyConnection, read_only: bool, snapshot: int | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if read_only and not self.path.exists():
            # A read-only attach cannot create the file; an empty warehouse is still a warehouse.
            con.execute(f"ATTACH {sql_string(str(self.path))} AS {quote_identifier(self.database_name)}")
            con.execute(f"DETACH {quote_identifier(self.database_name)}")
        options = " (READ_ONLY)" if read_only else ""
        con.execute(f"ATTACH {sql_string(str(self.path))} AS {quote_identifier(self.database_name)}{options}")
        con.execute(f"USE {quote_identifier(self.database_name)}")

    def dbt_target(self, schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # keep_open: one DuckDB instance for the whole run (reopening per node doubled the build time);
        # the transform handler closes it when the invocation ends, letting go of the file lock.
        # config_options: DuckDB's own memory, threads and spill limits (dbt's "threads" is its node parallelism).
        return {"type": "duckdb", "path": str(self.path), "schema": schema, "threads": 1, "keep_open": True,
                "config_options": dict(self.limits)}  # fmt: skip
