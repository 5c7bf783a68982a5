"""What every DuckDB-engine warehouse shares: instances, extensions, the S3 secret, sessions.

Each backend (:mod:`.duckdb`, :mod:`.ducklake`) says how to ATTACH its database
(:meth:`DuckDBEngine._attach`) and which errors are worth waiting out; this module
does the rest once:

* an in-memory DuckDB instance with ``autoinstall_known_extensions`` off and a
  private ``extension_directory``; extensions are installed there from the PyPI
  wheels (``duckdb-extension-*==1.5.5``), never downloaded;
* an S3 secret built from the AWS settings (moto's endpoint locally), so the lake's
  data files and stored objects are read and written in place;
* opening retried with jittered backoff while the backend's transient markers
  match (a file lock, a catalog server restarting), up to ``lock_timeout_s``;
* :class:`~pudato.backends.warehouse.session.Session` objects that record statements.

No statement that holds a secret (the S3 secret, a catalog DSN with a password)
is ever recorded, and secrets are scrubbed from error messages.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlparse

import duckdb

from pudato.backends.warehouse import TableName, WarehouseBackend, enforce_limits, parse_table_name, quote_identifier
from pudato.backends.warehouse.session import Policy, Session
from pudato.backends.warehouse.sql import scrubbed, sql_string, translate_error
from pudato.backoff import Backoff
from pudato.errors import BackendUnavailable, ConfigurationError, NotFound, PudatoError
from pudato.protocol import DataReference
from pudato.settings import AWSSettings

log = logging.getLogger(__name__)

# The wheel each extension comes in; the name DuckDB LOADs is the key.
EXTENSION_WHEELS = {
    "httpfs": "duckdb_extension_httpfs",
    "ducklake": "duckdb_extension_ducklake",
    "postgres": "duckdb_extension_postgres",
    "sqlite": "duckdb_extension_sqlite",
    "excel": "duckdb_extension_excel",  # loaded only by a load of an xlsx file
}


def load_extension(con: duckdb.DuckDBPyConnection, name: str, directory: Path) -> None:
    """LOAD ``name``, first installing it into ``directory`` from its wheel if it is not there yet."""
    try:
        con.execute(f"LOAD {name}")
        return
    except duckdb.Error:
        pass
    module_name = EXTENSION_WHEELS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigurationError(
            f"DuckDB extension {name!r} is not installed: "
            f"pip install {module_name.replace('_', '-')}=={duckdb.__version__}",
            extension=name,
        ) from None
    files = sorted(Path(str(module.__file__)).parent.glob(f"extensions/v{duckdb.__version__}/*.duckdb_extension"))
    if not files:
        raise ConfigurationError(
            f"{module_name} has no build of {name!r} for duckdb {duckdb.__version__}", extension=name
        )
    directory.mkdir(parents=True, exist_ok=True)
    # Worker processes on one host share the folder: one installs, the others wait and LOAD.
    with open(directory / ".install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            con.execute(f"INSTALL {sql_string(str(files[0]))}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    con.execute(f"LOAD {name}")


_SANDBOX_LOCK = threading.Lock()

# Per process: extension files whose signatures DuckDB checked here, with their (size, mtime).
_CHECKED: dict[tuple[int, str], tuple[int, int]] = {}


def _installed(directory: Path, name: str) -> list[Path]:
    # The postgres and sqlite extensions are installed under their scanner names.
    return sorted(directory.glob(f"v{duckdb.__version__}/*/{name}*.duckdb_extension"))


def _verified(directory: Path, names: Sequence[str]) -> bool:
    """Whether every extension's file was signature-checked in this process and has not changed since."""
    for name in names:
        files = _installed(directory, name)
        if len(files) != 1:
            return False
        stat = files[0].stat()
        if _CHECKED.get((os.getpid(), str(files[0]))) != (stat.st_size, stat.st_mtime_ns):
            return False
    return True


def _remember_verified(directory: Path, names: Sequence[str]) -> None:
    for name in names:
        for path in _installed(directory, name):
            stat = path.stat()
            _CHECKED[(os.getpid(), str(path))] = (stat.st_size, stat.st_mtime_ns)


def s3_secret_sql(aws: AWSSettings, name: str = "pudato_s3") -> tuple[str, tuple[str, ...]]:
    """``CREATE SECRET`` for S3 from the AWS settings, and the secrets to scrub from errors."""
    options = ["TYPE s3", f"REGION {sql_string(aws.region)}"]
    secrets: tuple[str, ...] = ()
    if aws.access_key_id and aws.secret_access_key:
        secret = aws.secret_access_key.get_secret_value()
        options += [f"KEY_ID {sql_string(aws.access_key_id)}", f"SECRET {sql_string(secret)}"]
        secrets = (secret,)
    if aws.endpoint_url:
        endpoint = urlparse(aws.endpoint_url)
        options += [
            f"ENDPOINT {sql_string(endpoint.netloc)}",
            "URL_STYLE 'path'",
            f"USE_SSL {'true' if endpoint.scheme == 'https' else 'false'}",
        ]
    return f"CREATE OR REPLACE SECRET {name} ({', '.join(options)})", secrets


class DuckDBEngine(WarehouseBackend):
    """A warehouse that DuckDB, in this process, opens for each operation."""

    #: Extensions every instance loads (httpfs is added when S3 is configured).
    extensions: tuple[str, ...] = ()
    #: Words in DuckDB's errors that mean "wait and try again" when opening.
    open_markers: ClassVar[tuple[str, ...]] = ()
    #: Words that mean "another writer got there first: run the transaction again".
    conflict_markers: ClassVar[tuple[str, ...]] = ()
    #: Keep a read-only connection opened ahead of need (never for a file other processes must lock).
    keeps_spare: ClassVar[bool] = False
    _spare: Future[duckdb.DuckDBPyConnection] | None = None
    _spare_pid: int = 0
    _sandboxed: tuple[int, duckdb.DuckDBPyConnection] | None = None
    #: DuckDB settings that bound one instance (memory, threads, spill): ``warehouse.instance_limits``.
    limits: Mapping[str, Any] = MappingProxyType({})

    def __init__(
        self,
        *,
        extension_dir: Path,
        aws: AWSSettings | None = None,
        lock_timeout_s: float = 60.0,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 1.0,
    ) -> None:
        self.extension_dir = Path(extension_dir).resolve()
        self.aws = aws
        self.lock_timeout_s = lock_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s

    # -- what a backend provides -------------------------------------------------------

    def _attach(self, con: duckdb.DuckDBPyConnection, read_only: bool, snapshot: int | None = None) -> None:
        """ATTACH the warehouse as :attr:`database_name` and USE it."""
        raise NotImplementedError

    def _readable(self) -> list[str]:
        """Folders (or URL prefixes) the warehouse itself reads, kept open inside a query sandbox."""
        return []

    @property
    def location(self) -> str:
        """Where the warehouse is, for messages (never with a password)."""
        return self.database_name

    def _where(self) -> dict[str, str]:
        """Error details that say where the warehouse is."""
        return {"location": self.location}

    def _secrets(self) -> tuple[str, ...]:
        """Text never to show in an error message."""
        return ()

    # -- instances ---------------------------------------------------------------------

    def instance(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory DuckDB with this warehouse's extensions and S3 secret, nothing attached."""
        names = list(dict.fromkeys(list(self.extensions) + (["httpfs"] if self.aws is not None else [])))
        verified = _verified(self.extension_dir, names)
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "extension_directory": str(self.extension_dir),
                # Checking a signature hashes the whole file (0.2-1 s for these three), on every
                # instance. This process already checked these very files (same size and mtime).
                "allow_unsigned_extensions": verified,
                **self.limits,
            },
        )
        try:
            enforce_limits(con, self.limits)
            for name in names:
                load_extension(con, name, self.extension_dir)
            if not verified:
                _remember_verified(self.extension_dir, names)
            if self.aws is not None:
                statement, secrets = s3_secret_sql(self.aws)
                try:
                    con.execute(statement)
                except duckdb.Error as exc:
                    raise translate_error(exc, None, secrets) from None
        except BaseException:
            con.close()
            raise
        return con

    def _policy(self) -> Policy:
        return Policy(
            transient_markers=self.conflict_markers,
            retry_timeout_s=self.lock_timeout_s,
            retry_initial_s=self.retry_initial_s,
            retry_max_s=max(self.retry_max_s, 0.5),
            versioned=self.versioned,
            readable=self._readable(),
            scrub=self._secrets(),
        )

    def _open(self, read_only: bool, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        if read_only and snapshot is None and self.keeps_spare:
            spare = self._take_spare()
            if spare is not None:
                return spare
        return self._open_now(read_only, snapshot)

    def _take_spare(self) -> duckdb.DuckDBPyConnection | None:
        """The read-only connection prepared in the background, if ready; another is started.

        A fresh instance per operation keeps a query's sandbox from leaking, but
        opening one (ATTACH, reading the catalog) costs a few hundred milliseconds.
        So each process keeps one spare, opened while the previous operation ran.
        A spare sees every commit made since it was opened: each transaction
        starts from the lake's newest snapshot.
        """
        future, self._spare = self._spare, None
        if future is not None and self._spare_pid != os.getpid():
            future = None  # made in the parent before a fork: not ours to use
        self._spare_pid = os.getpid()
        self._spare = Future()
        threading.Thread(target=self._prepare_spare, args=(self._spare,), daemon=True).start()
        if future is None:
            return None
        try:
            return future.result(timeout=self.lock_timeout_s)
        except (PudatoError, duckdb.Error, OSError, TimeoutError):  # the spare failed: the caller opens, with retries
            return None

    def _prepare_spare(self, future: Future[duckdb.DuckDBPyConnection]) -> None:
        try:
            future.set_result(self._open_now(read_only=True))
        except Exception as exc:
            future.set_exception(exc)

    def _open_now(self, read_only: bool, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        # Jitter spreads out workers that all waited on the same writer.
        backoff = Backoff(self.retry_initial_s, self.retry_max_s, self.lock_timeout_s, jitter=(0.5, 1.0))
        while True:
            con = self.instance()
            try:
                self._attach(con, read_only, snapshot)
                return con
            except duckdb.Error as exc:
                con.close()
                text = str(exc)
                if not any(marker in text for marker in self.open_markers):
                    raise self._open_error(exc, snapshot) from None
                log.debug("warehouse busy, retrying: %s", scrubbed(text, self._secrets()))
                if not backoff.wait():
                    raise BackendUnavailable(
                        f"{self.kind} warehouse {self.location} stayed locked or unreachable for "
                        f"{self.lock_timeout_s:g}s ({backoff.attempts} attempts; PUDATO_WAREHOUSE__LOCK_TIMEOUT_S): "
                        f"{scrubbed(text, self._secrets())[:500]}",
                        attempts=backoff.attempts,
                        **self._where(),
                    ) from None
            except BaseException:
                con.close()
                raise

    def _open_error(self, exc: duckdb.Error, snapshot: int | None) -> PudatoError:
        return translate_error(exc, None, self._secrets())

    @contextmanager
    def connect(self, read_only: bool = False, snapshot: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose default catalog is the warehouse; always closed on exit."""
        con = self._open(read_only, snapshot)
        try:
            yield con
        except duckdb.Error as exc:
            raise translate_error(exc, None, self._secrets()) from None
        finally:
            con.close()

    @contextmanager
    def session(self, read_only: bool = False) -> Iterator[Session]:
        with self.connect(read_only) as con:
            yield from self._session(con, read_only)

    @contextmanager
    def query_session(self, files: Sequence[str] = (), directories: Sequence[Path] = ()) -> Iterator[Session]:
        """A read-only session for SQL from a message: it may read only ``files`` and the warehouse,
        and write only below ``directories`` (:meth:`Session.restrict`).

        The sandbox is a setting of the whole DuckDB instance, so such a session gets an
        instance of its own. A query that names no file and writes none has the same
        sandbox as every other such query, so on a warehouse that can stay attached
        (the lake) those share one sandboxed instance per process, each in its own
        cursor and transaction: no ATTACH per query, and the lake's files (never
        rewritten) stay in DuckDB's file cache between queries.
        """
        if files or directories or not self.keeps_spare:
            with self.session(read_only=True) as session:
                session.restrict(files=files, directories=directories)
                yield session
            return
        cursor = self._sandbox().cursor()
        try:
            cursor.execute(f"USE {quote_identifier(self.database_name)}")  # a cursor starts in memory
            yield from self._session(cursor, read_only=True)
        except BaseException:
            self._sandboxed = None  # whatever broke (the catalog's connection?) is not kept
            raise
        finally:
            cursor.close()

    def _sandbox(self) -> duckdb.DuckDBPyConnection:
        with _SANDBOX_LOCK:
            held = self._sandboxed
            if held is not None and held[0] == os.getpid():
                return held[1]
            con = self._open_now(read_only=True)
            Session(con, self.database_name, self._policy()).restrict()
            self._sandboxed = (os.getpid(), con)
            return con

    def _session(self, con: duckdb.DuckDBPyConnection, read_only: bool) -> Generator[Session, None, None]:
        session = Session(con, self.database_name, self._policy())
        if not (read_only and self.versioned):
            yield session
            return
        # One transaction: every read in the session sees the same snapshot.
        con.begin()
        try:
            yield session
        finally:
            with suppress(duckdb.Error):
                con.rollback()

    # -- versions ----------------------------------------------------------------------

    def versioned_references(
        self, references: Sequence[DataReference], snapshots: Mapping[str, int | None] | None = None
    ) -> list[DataReference]:
        ours = [r for r in references if r.namespace == self.namespace]
        if not ours:
            return list(references)
        found: dict[str, dict[str, Any]] = {}
        with self.session(read_only=True) as session:
            for reference in ours:
                try:
                    name = parse_table_name(reference.name)
                    stored = session.find(name)
                    if stored is None:
                        continue
                    at = (snapshots or {}).get(reference.name)
                    found[reference.name] = session.version(stored[0], at).facets()
                except NotFound:
                    continue
        return [
            r.model_copy(update={"facets": {**r.facets, **found[r.name]}})
            if r.namespace == self.namespace and r.name in found
            else r
            for r in references
        ]

    def _table(self, table: TableName | str) -> TableName:
        return parse_table_name(table) if isinstance(table, str) else table
