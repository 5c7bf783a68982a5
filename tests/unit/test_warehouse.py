"""The DuckDB warehouse backend: names, connections, lock waits, the query sandbox, CSV preparation."""

from __future__ import annotations

import codecs
import logging
import multiprocessing
import pickle
import threading
from pathlib import Path

import duckdb
import pytest

from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse import (
    TableName,
    check_identifier,
    parse_table_name,
    quote_identifier,
    warehouse_backend,
)
from pudato.backends.warehouse.duckdb import DuckDBWarehouse, parse_statements, split_qualified
from pudato.errors import BackendUnavailable, ConfigurationError, QueryFailed, UnsafeInput
from pudato.handlers.csv_options import format_for, normalize_name, normalize_names, sniff_encoding, utf8_file
from pudato.handlers.table import TableHandler
from pudato.protocol import Command
from pudato.settings import Settings


def make_settings(tmp_path: Path, lock_timeout_s: float = 10.0) -> Settings:
    return Settings(
        _env_file=None,
        storage={"backend": "local", "local_root": tmp_path / "objects"},
        warehouse={"path": tmp_path / "db" / "warehouse.duckdb", "lock_timeout_s": lock_timeout_s},
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse.from_settings(make_settings(tmp_path))


# -- names ----------------------------------------------------------------------------


def test_table_names():
    assert parse_table_name("revenue") == TableName("main", "revenue")
    assert parse_table_name("budget.Revenue_2122").qualified == "budget.Revenue_2122"
    assert parse_table_name("_x.y").sql == '"_x"."y"'
    for bad in ["a.b.c", "1a", "a b", "a;b", '"a"', "a.", ".a", "", "x" * 64, "é"]:
        with pytest.raises(UnsafeInput):
            parse_table_name(bad)
    assert check_identifier("ok_1") == "ok_1"
    with pytest.raises(UnsafeInput):
        check_identifier("no.dots")


def test_quote_identifier_doubles_quotes_and_refuses_control_characters():
    assert quote_identifier('Dept "Code"') == '"Dept ""Code"""'
    assert quote_identifier("2014-15 Actuals") == '"2014-15 Actuals"'
    for bad in ["", "a\x00b", "a\nb", "x" * 256]:
        with pytest.raises(UnsafeInput):
            quote_identifier(bad)


def test_split_qualified_reads_duckdbs_table_name_strings():
    assert split_qualified("t") == ["t"]
    assert split_qualified("w.main.t AS x") == ["w", "main", "t"]
    assert split_qualified('"S p"."a.b" AS z') == ["S p", "a.b"]
    assert split_qualified('s."say ""hi"""') == ["s", 'say "hi"']


def test_parse_statements():
    assert [s.type for s in parse_statements("SELECT 1; DROP TABLE x")] == ["SELECT", "DROP"]
    with pytest.raises(QueryFailed, match="syntax error"):
        parse_statements("SELEC 1")


# -- connections ------------------------------------------------------------------------


def test_backend_from_settings_and_dataset_names(tmp_path):
    backend = warehouse_backend(make_settings(tmp_path))
    assert isinstance(backend, DuckDBWarehouse)
    assert backend.database_name == "warehouse"
    reference = backend.reference(parse_table_name("t"), rows=1)
    assert (reference.namespace, reference.name, reference.facets) == ("duckdb://warehouse", "main.t", {"rows": 1})
    with pytest.raises(ConfigurationError, match="reserves"):
        DuckDBWarehouse(tmp_path / "memory.duckdb")


def test_connect_creates_the_folder_and_read_only_creates_the_file(warehouse):
    assert not warehouse.path.parent.exists()
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT current_database()").fetchone() == ("warehouse",)
    assert warehouse.path.is_file()
    with pytest.raises(QueryFailed, match="read-only"), warehouse.connect(read_only=True) as con:
        con.execute("CREATE TABLE t (a INTEGER)")


def test_connections_are_closed_after_errors(warehouse, tmp_path):
    with pytest.raises(QueryFailed, match="Catalog Error"), warehouse.connect() as con:
        con.execute("SELECT * FROM nope")
    # Closed: another process can take the write lock at once.
    child = multiprocessing.get_context("spawn").Process(target=_open_and_write, args=(str(warehouse.path),))
    child.start()
    child.join(60)
    assert child.exitcode == 0


def _open_and_write(path: str) -> None:
    con = duckdb.connect(path)
    con.execute("CREATE TABLE from_child AS SELECT 1 AS a")
    con.close()


def test_restricted_session_does_not_leak_into_the_next_one(warehouse, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    with warehouse.session(read_only=True) as session:
        session.restrict(files=[], directories=[])
        with pytest.raises(UnsafeInput):
            session.execute(f"SELECT * FROM read_csv('{data}')")
    with warehouse.session() as session:
        assert session.execute(f"SELECT * FROM read_csv('{data}')").fetchall() == [(1,)]


# -- lock conflicts ------------------------------------------------------------------------


def _hold_lock(path: str, ready, release) -> None:
    """Another worker: keeps the warehouse open read-write until the test lets go."""
    con = duckdb.connect(path)
    ready.set()
    release.wait(120)
    con.close()


@pytest.fixture
def hold_lock():
    """Start a process holding the warehouse's lock; returns the event that releases it."""
    context = multiprocessing.get_context("spawn")
    children = []

    def start(path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        ready, release = context.Event(), context.Event()
        child = context.Process(target=_hold_lock, args=(str(path), ready, release))
        child.start()
        children.append((child, release))
        assert ready.wait(60), "the lock-holding process did not start"
        return release

    yield start
    for child, release in children:
        release.set()
        child.join(30)
        if child.is_alive():
            child.terminate()
            child.join()


class _Signal(logging.Handler):
    """Sets an event when the warehouse reports a lock conflict it will wait out."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.busy = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "warehouse busy" in record.getMessage():
            self.busy.set()


@pytest.fixture
def warehouse_busy():
    """An event set once an operation has found the warehouse locked and is waiting."""
    logger = logging.getLogger("pudato.backends.warehouse.engine")
    signal, level = _Signal(), logger.level
    logger.addHandler(signal)
    logger.setLevel(logging.DEBUG)
    yield signal.busy
    logger.removeHandler(signal)
    logger.setLevel(level)


def _create(tmp_path: Path, lock_timeout_s: float):
    settings = make_settings(tmp_path, lock_timeout_s)
    handler = TableHandler(settings, LocalStorage(settings.storage.local_root), DuckDBWarehouse.from_settings(settings))
    command = Command(handler="table", action="create", payload={"table": "t", "columns": {"a": "INTEGER"}})
    return handler.execute(command)


def _in_thread(work):
    """Run ``work`` in a thread; returns the thread and a list that receives its value."""
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(work()), daemon=True)
    thread.start()
    return thread, outcome


def test_an_operation_waits_for_another_process_and_then_succeeds(tmp_path, hold_lock, warehouse_busy):
    release = hold_lock(make_settings(tmp_path).warehouse.path)
    thread, outcome = _in_thread(lambda: _create(tmp_path, lock_timeout_s=120))
    assert warehouse_busy.wait(60), "the operation never met the lock"
    assert thread.is_alive(), "the operation finished while the lock was held"
    release.set()
    thread.join(120)
    [result] = outcome
    assert result.status == "succeeded", result.error


def test_reads_wait_for_a_writer_too(tmp_path, hold_lock, warehouse_busy):
    warehouse = DuckDBWarehouse.from_settings(make_settings(tmp_path, 120))
    with warehouse.connect() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
    release = hold_lock(warehouse.path)

    def read():
        with warehouse.connect(read_only=True) as con:
            return con.execute("SELECT a FROM t").fetchall()

    thread, outcome = _in_thread(read)
    assert warehouse_busy.wait(60), "the read never met the writer's lock"
    assert thread.is_alive(), "the read finished while the writer held the lock"
    release.set()
    thread.join(120)
    assert outcome == [[(1,)]]


def test_a_lock_held_too_long_is_backend_unavailable(tmp_path, hold_lock):
    path = make_settings(tmp_path).warehouse.path
    hold_lock(path)
    result = _create(tmp_path, lock_timeout_s=0.3)
    assert result.status == "failed"
    assert result.error.type == "BackendUnavailable"
    assert result.error.kind == "transient"
    assert str(path) in result.error.message
    assert "lock" in result.error.message

    warehouse = DuckDBWarehouse(path, lock_timeout_s=0.2)
    with pytest.raises(BackendUnavailable) as caught, warehouse.connect():
        pass
    assert pickle.loads(pickle.dumps(caught.value)).details["path"] == str(path)


def test_a_connection_held_in_this_process_is_waited_for_as_well(warehouse, warehouse_busy):
    release = threading.Event()
    opened = threading.Event()

    def hold() -> None:
        with warehouse.connect():
            opened.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(10)
        impatient = DuckDBWarehouse(warehouse.path, lock_timeout_s=0.2)
        with pytest.raises(BackendUnavailable), impatient.connect():
            pass
        warehouse_busy.clear()
        # Let go only once the read below is seen waiting for this connection.
        threading.Thread(target=lambda: warehouse_busy.wait(60) and release.set(), daemon=True).start()
        with warehouse.connect(read_only=True) as con:
            assert con.execute("SELECT 1").fetchone() == (1,)
    finally:
        release.set()
        holder.join(10)


# -- CSV preparation ---------------------------------------------------------------------------


def test_normalize_names():
    assert normalize_name("2014-15 Actuals") == "_2014_15_actuals"
    assert normalize_name("Dept Code") == "dept_code"
    assert normalize_name("  Org Level 5 -- Name!! ") == "org_level_5_name"
    assert normalize_name("Año Fiscal") == "ano_fiscal"
    names = normalize_names(["A b", "a-b", "A_B", "", "%", "a_b_2"])
    assert names == ["a_b", "a_b_2", "a_b_3", "column_4", "column_5", "a_b_2_2"]
    assert len(normalize_name("x" * 100)) == 63


def test_sniff_encoding(tmp_path):
    cases = {
        "utf-8": "Café\n".encode(),
        "utf-8-sig": codecs.BOM_UTF8 + "Café\n".encode(),
        "utf-16": "Café\n".encode("utf-16"),
        "cp1252": "Café €\n".encode("cp1252"),
        "latin-1": b"caf\xe9 \x81\n",  # 0x81 is undefined in cp1252
    }
    for expected, data in cases.items():
        path = tmp_path / f"{expected}.csv"
        path.write_bytes(data)
        assert sniff_encoding(path) == expected


def test_utf8_file_transcodes_only_when_needed(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"a\r\n1\r\n")
    with utf8_file(plain) as (path, used):
        assert (path, used) == (plain, "utf-8")
    cp = tmp_path / "cp.csv"
    cp.write_bytes("a\r\n€\r\n".encode("cp1252"))
    with utf8_file(cp) as (path, used):
        assert used == "cp1252"
        assert path != cp
        assert path.read_bytes() == "a\r\n€\r\n".encode()  # CRLF kept as it was
    assert not path.exists()  # the temp copy is gone


def test_format_for():
    assert format_for("a/b.CSV", None) == "csv"
    assert format_for("a/b.parquet", None) == "parquet"
    assert format_for("a/b.ndjson", None) == "json"
    assert format_for("a/b", "csv") == "csv"
