"""Where the lake's catalog lives, and how DuckLake and the catalog server are reached.

A PostgreSQL database of its own (``pudato_lake`` on the registry's server by
default; ``PUDATO_WAREHOUSE__CATALOG_URL``/``__CATALOG_DATABASE``/``__CATALOG_PASSWORD``)
or a SQLite file for the embedded demo. :class:`Catalog` gives DuckLake's attach
path (with PostgreSQL's ``lock_timeout`` from ``PUDATO_WAREHOUSE__LOCK_TIMEOUT_S``),
dbt's secret for it, and a description without the password.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pudato.backends.warehouse.sql import scrubbed
from pudato.errors import ConfigurationError
from pudato.settings import Settings


@dataclass(frozen=True)
class Catalog:
    """Where the lake's catalog lives: a PostgreSQL database or a SQLite file."""

    kind: str  # "postgres" or "sqlite"
    database: str = ""
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    path: Path | None = None
    lock_timeout_s: float | None = None  # PostgreSQL's lock_timeout on the catalog's connections

    @property
    def name(self) -> str:
        """The lake's name in dataset namespaces: the database, or the SQLite file's stem."""
        return self.database if self.kind == "postgres" else Path(str(self.path)).stem

    def attach_path(self, with_password: bool = True) -> str:
        """The ``ducklake:...`` path; with the password it is never recorded or logged.

        Without it, the password must come from a PostgreSQL secret (:meth:`dbt_secret`).
        """
        if self.kind == "sqlite":
            return f"ducklake:sqlite:{self.path}"
        parts = [f"dbname={self.database}"]
        password = self.password if with_password else None
        parts += [f"{key}={value}" for key, value in (("host", self.host), ("port", self.port),
                                                       ("user", self.user), ("password", password)) if value]
        if self.lock_timeout_s:  # a catalog table someone holds fails the statement, rather than stalling it
            parts.append(f"options='-c lock_timeout={int(self.lock_timeout_s * 1000)}'")
        return "ducklake:postgres:" + " ".join(parts)

    def dbt_secret(self) -> dict[str, Any] | None:
        """A dbt-duckdb ``secrets`` entry: the catalog's credentials as DuckDB's default PostgreSQL secret.

        The lake's ATTACH (without a password) takes them from it, and DuckDB never
        shows a secret's password (``duckdb_secrets()`` redacts it), so the repository's
        SQL and Jinja (``target.attach``) cannot read it.
        """
        if self.kind != "postgres" or not self.password:
            return None
        found: dict[str, Any] = {"type": "postgres", "database": self.database, "password": self.password}
        found.update({key: str(value) for key, value in (("host", self.host), ("port", self.port),
                                                        ("user", self.user)) if value})  # fmt: skip
        return found

    def describe(self) -> str:
        """Where the catalog is, without the password."""
        if self.kind == "sqlite":
            return f"SQLite catalog {self.path}"
        return f"PostgreSQL database {self.database} on {self.host or 'localhost'}:{self.port or 5432}"


def catalog_from_settings(settings: Settings) -> Catalog:
    """The catalog ``warehouse.catalog_url`` names, else one beside the registry (see the module doc)."""
    warehouse = settings.warehouse
    url = warehouse.catalog_url
    password = warehouse.catalog_password.get_secret_value() if warehouse.catalog_password else None
    if url is None:
        registry = settings.registry.url
        if registry.startswith("sqlite"):
            folder = Path(registry.split(":///", 1)[1]).parent if ":///" in registry else Path(".pudato")
            return Catalog("sqlite", path=(folder / "lake.sqlite").resolve())
        return _postgres(registry, warehouse.catalog_database, password, warehouse.lock_timeout_s)
    if url.startswith("sqlite:"):
        return Catalog("sqlite", path=Path(url.split(":///", 1)[-1]).resolve())
    if url.startswith("postgres"):
        return _postgres(url, None, password, warehouse.lock_timeout_s)
    raise ConfigurationError(
        "PUDATO_WAREHOUSE__CATALOG_URL must be postgresql://user@host:port/database or sqlite:///path",
        field="warehouse__catalog_url",
    )


def _postgres(url: str, database: str | None, password: str | None, lock_timeout_s: float) -> Catalog:
    from sqlalchemy.engine import (
        make_url,  # lazy: only the lake with a PostgreSQL catalog needs it
    )

    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host")
    return Catalog(
        "postgres",
        database=database or parsed.database or "pudato_lake",
        host=str(host) if host else None,
        port=parsed.port,
        user=parsed.username,
        password=password or parsed.password,
        lock_timeout_s=lock_timeout_s,
    )


def create_database(catalog: Catalog) -> None:
    """Create the catalog's PostgreSQL database if it is missing (another process may be doing the same)."""
    import psycopg2  # lazy: only a PostgreSQL catalog needs it
    from psycopg2 import errors as pg_errors
    from psycopg2 import sql as pg_sql

    connection_args = {"host": catalog.host, "port": catalog.port, "user": catalog.user, "password": catalog.password}
    try:
        con = psycopg2.connect(dbname="postgres", **{k: v for k, v in connection_args.items() if v})
    except psycopg2.Error as exc:
        message = scrubbed(str(exc), (catalog.password or "",)) if catalog.password else str(exc)
        raise ConfigurationError(
            f"cannot reach the lake's catalog server for {catalog.describe()}: {message}"
        ) from None
    try:
        con.autocommit = True
        with con.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (catalog.database,))
            if cursor.fetchone() is None:
                # Another `infra up` may make it in the meantime.
                with suppress(pg_errors.DuplicateDatabase):
                    cursor.execute(pg_sql.SQL("CREATE DATABASE {}").format(pg_sql.Identifier(catalog.database)))
    finally:
        con.close()
