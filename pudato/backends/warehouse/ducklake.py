"""The lake: a DuckLake that every worker on every host shares, with a snapshot per commit.

* The catalog (schemas, tables, snapshots, file lists) is a PostgreSQL database of
  its own, ``pudato_lake`` on the registry's server by default
  (``PUDATO_WAREHOUSE__CATALOG_URL``/``__CATALOG_DATABASE``/``__CATALOG_PASSWORD``),
  or a SQLite file for the embedded demo (one machine, writers serialised).
* The data are Parquet files under ``PUDATO_WAREHOUSE__DATA_PATH``, by default
  ``s3://<bucket>/lake/``. Files are only ever added; a replaced table keeps its old
  files for the snapshots that still name them.
* Each worker process runs DuckDB and ATTACHes the lake as ``lake``; nothing is
  shared on local disk, and there is no lock: a write that conflicts with another
  process's commit is rolled back and run again (:meth:`Session.atomic`).

Versions: every commit is a snapshot. :meth:`DuckLakeWarehouse.session_at`
attaches the lake read-only at ``SNAPSHOT_VERSION n`` (or pins only some tables
at ``n``, through temp views that shadow them); a snapshot that was expired, or a
table that did not exist then, raises :class:`~pudato.errors.SnapshotGone`.
Snapshots are never expired by Pudato: do it (``ducklake_expire_snapshots``) only
for snapshots older than the oldest job you may rerun.

Where the catalog is, and how it is reached: :mod:`.lake_catalog`. :func:`ensure_catalog`
creates the catalog database and initialises the lake;
``pudato infra up`` calls it, idempotently.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
from pydantic import SecretStr

from pudato import datasets
from pudato.backends.warehouse import DEFAULT_SCHEMA, TableName, instance_limits, quote_identifier
from pudato.backends.warehouse.engine import DuckDBEngine, s3_secret_sql
from pudato.backends.warehouse.lake_catalog import Catalog, catalog_from_settings, create_database
from pudato.backends.warehouse.session import Session
from pudato.backends.warehouse.sql import (
    CATALOG_LOCKED,
    CONNECTION_LOST,
    WRITE_CONFLICTS,
    sql_string,
    translate_error,
)
from pudato.errors import ConfigurationError, PudatoError, SnapshotGone
from pudato.settings import Settings

ALIAS = "lake"
_GONE = ("No snapshot found", "does not exist at version")


def default_data_path(settings: Settings) -> str:
    if settings.warehouse.data_path:
        return settings.warehouse.data_path.rstrip("/") + "/"
    if settings.storage.backend == "s3":
        return f"s3://{settings.storage.bucket}/lake/"
    return str(settings.storage.local_root.resolve().parent / "lake") + "/"


class DuckLakeWarehouse(DuckDBEngine):
    """DuckLake: a catalog database plus Parquet files, attached as ``lake`` by every process."""

    kind = "ducklake"
    versioned = True
    concurrent_writers = True
    enforces_primary_keys = False
    keeps_spare = True
    conflict_markers = WRITE_CONFLICTS
    open_markers = ("database is locked", "Unable to connect", *CONNECTION_LOST, *CATALOG_LOCKED)

    def __init__(
        self,
        catalog: Catalog,
        data_path: str,
        *,
        extension_dir: Path,
        aws: Any = None,
        lock_timeout_s: float = 60.0,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
    ) -> None:
        super().__init__(
            extension_dir=extension_dir, aws=aws, lock_timeout_s=lock_timeout_s,
            retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
        )  # fmt: skip
        self.catalog = catalog
        self.data_path = data_path if data_path.startswith("s3://") else str(Path(data_path).resolve()) + "/"
        self.extensions = ("ducklake", catalog.kind)

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckLakeWarehouse:
        data_path = default_data_path(settings)
        on_s3 = data_path.startswith("s3://") or settings.storage.backend == "s3"
        lake = cls(
            catalog_from_settings(settings),
            data_path,
            extension_dir=settings.warehouse.extension_dir,
            aws=settings.aws if on_s3 else None,
            lock_timeout_s=settings.warehouse.lock_timeout_s,
        )
        lake.limits = instance_limits(settings.warehouse)
        return lake

    @property
    def database_name(self) -> str:
        return ALIAS

    @property
    def namespace(self) -> str:
        return datasets.lake_namespace(self.catalog.name)

    @property
    def location(self) -> str:
        return f"{self.catalog.describe()} with data in {self.data_path}"

    def _secrets(self) -> tuple[str, ...]:
        secrets: tuple[str, ...] = (self.catalog.password or "",)
        if self.aws is not None and self.aws.secret_access_key:
            secrets += (self.aws.secret_access_key.get_secret_value(),)
        return tuple(s for s in secrets if s)

    def _readable(self) -> list[str]:
        return [self.data_path]

    def _attach(self, con: duckdb.DuckDBPyConnection, read_only: bool, snapshot: int | None = None) -> None:
        self._attach_as(con, ALIAS, read_only, snapshot)
        con.execute(f"USE {ALIAS}")

    def _attach_as(self, con: duckdb.DuckDBPyConnection, alias: str, read_only: bool, snapshot: int | None) -> None:
        if self.catalog.kind == "sqlite" and self.catalog.path is not None:
            self.catalog.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.data_path.startswith("s3://"):
            Path(self.data_path).mkdir(parents=True, exist_ok=True)
        options = [f"DATA_PATH {sql_string(self.data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        con.execute(
            f"ATTACH {sql_string(self.catalog.attach_path())} AS {quote_identifier(alias)} ({', '.join(options)})"
        )

    def _open_error(self, exc: duckdb.Error, snapshot: int | None) -> PudatoError:
        text = str(exc)
        if snapshot is not None and any(marker in text for marker in _GONE):
            return SnapshotGone(self.namespace, snapshot)
        if "does not exist" in text and self.catalog.kind == "postgres" and self.catalog.database in text:
            return ConfigurationError(
                f"the lake's catalog, {self.catalog.describe()}, does not exist: run `pudato infra up` "
                "(it creates it), or set PUDATO_WAREHOUSE__CATALOG_URL",
                catalog=self.catalog.describe(),
            )
        return translate_error(exc, None, self._secrets())

    # -- versions ----------------------------------------------------------------------

    @contextmanager
    def session_at(self, snapshot: int, tables: Sequence[TableName | str] | None = None) -> Iterator[Session]:
        if not tables:
            with self.connect(read_only=True, snapshot=snapshot) as con:
                yield from self._session(con, read_only=True)
            return
        names = [self._table(t) for t in tables]
        with self.connect(read_only=True) as con:
            gen: Generator[Session, None, None] = self._session(con, read_only=True)
            session = next(gen)
            try:
                self._pin(session, names, snapshot)
                yield session
            finally:
                gen.close()

    def _pin(self, session: Session, names: list[TableName], snapshot: int) -> None:
        """Shadow each table with a temp view of it at ``snapshot``: unqualified and schema-qualified names see it."""
        known = {row[0] for row in session.rows(f"SELECT snapshot_id FROM {ALIAS}.snapshots() WHERE snapshot_id = ?",
                                                [int(snapshot)])}  # fmt: skip
        if not known:
            raise SnapshotGone(", ".join(n.qualified for n in names), snapshot)
        for name in names:
            session.version(name, snapshot)  # SnapshotGone if the table did not exist then
            if name.schema != DEFAULT_SCHEMA:
                session.execute(f"CREATE SCHEMA IF NOT EXISTS temp.{quote_identifier(name.schema)}", record=False)
            session.execute(
                f"CREATE TEMP VIEW {name.sql} AS SELECT * FROM {ALIAS}.{name.sql} AT (VERSION => {int(snapshot)})",
                record=False,
            )

    # -- dbt ---------------------------------------------------------------------------

    def for_build(
        self,
        catalog_user: str | None = None,
        catalog_password: str | None = None,
        s3_key_id: str | None = None,
        s3_secret: str | None = None,
    ) -> DuckLakeWarehouse:
        catalog = self.catalog
        if catalog.kind == "postgres" and (catalog_user or catalog_password):
            catalog = replace(catalog, user=catalog_user or catalog.user, password=catalog_password)
        aws = self.aws
        if aws is not None and s3_key_id and s3_secret:
            aws = aws.model_copy(update={"access_key_id": s3_key_id, "secret_access_key": SecretStr(s3_secret)})
        if catalog is self.catalog and aws is self.aws:
            return self
        return DuckLakeWarehouse(
            catalog, self.data_path, extension_dir=self.extension_dir, aws=aws, lock_timeout_s=self.lock_timeout_s,
            retry_initial_s=self.retry_initial_s, retry_max_s=self.retry_max_s,
        )  # fmt: skip

    def dbt_target(self, schema: str = DEFAULT_SCHEMA) -> dict[str, Any]:
        """dbt-duckdb on the lake: an in-memory DuckDB that attaches the lake as its database.

        The target holds the catalog password and the S3 keys, only as DuckDB secrets
        (never in the ATTACH string): the transform runner writes it to a private
        profiles folder, and never records it. The S3 secret is scoped to the lake's data.
        """
        self.instance().close()  # the extensions are installed in extension_dir before dbt needs them
        target: dict[str, Any] = {
            "type": "duckdb",
            "path": ":memory:",
            "database": ALIAS,
            "schema": schema,
            "threads": 1,
            "keep_open": True,
            "attach": [{"path": self.catalog.attach_path(with_password=False), "alias": ALIAS,
                        "options": {"data_path": self.data_path}}],
            # Extension settings go under config_options, or dbt-duckdb tries a download first.
            "config_options": {
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": True,
                "extension_directory": str(self.extension_dir),
                **self.limits,  # DuckDB's memory, threads and spill limits (dbt's "threads" is its parallelism)
            },
        }
        secrets = [_dbt_secret(self.aws, self.data_path)] if self.aws is not None else []
        catalog = self.catalog.dbt_secret()
        if catalog is not None:
            secrets.append(catalog)
        if secrets:
            target["secrets"] = secrets
        return target

    def dbt_attachment_at(self, snapshot: int) -> dict[str, Any]:
        return {
            "path": self.catalog.attach_path(with_password=False),
            "alias": f"{ALIAS}_at_{int(snapshot)}",
            "read_only": True,
            "options": {"data_path": self.data_path, "snapshot_version": int(snapshot)},
        }


def _dbt_secret(aws: Any, data_path: str) -> dict[str, Any]:
    from urllib.parse import urlparse

    secret: dict[str, Any] = {"type": "s3", "region": aws.region}
    if data_path.startswith("s3://"):
        secret["scope"] = data_path
    if aws.access_key_id and aws.secret_access_key:
        secret.update(key_id=aws.access_key_id, secret=aws.secret_access_key.get_secret_value())
    if aws.endpoint_url:
        endpoint = urlparse(aws.endpoint_url)
        secret.update(endpoint=endpoint.netloc, url_style="path", use_ssl=endpoint.scheme == "https")
    return secret


def ensure_catalog(settings: Settings) -> dict[str, str]:
    """Create the catalog database if it is missing and initialise the lake; safe to run again.

    Run once, before the workers start (``pudato infra up``): the first ATTACH writes
    the catalog's tables, and several processes doing that at once would race.
    """
    lake = DuckLakeWarehouse.from_settings(settings)
    if lake.catalog.kind == "postgres":
        create_database(lake.catalog)
    with lake.connect() as con:
        snapshot = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()
    return {
        "catalog": lake.catalog.describe(),
        "data_path": lake.data_path,
        "snapshot": str(snapshot[0] if snapshot else ""),
    }


__all__ = ["ALIAS", "DuckLakeWarehouse", "ensure_catalog", "s3_secret_sql"]
