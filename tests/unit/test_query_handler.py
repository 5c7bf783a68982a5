"""The query handler: one sandboxed SELECT over the warehouse and stored files."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.handlers.query import QueryHandler
from pudato.handlers.table import TableHandler
from pudato.protocol import Command, Result
from pudato.settings import Settings

LA = Path(__file__).resolve().parents[2] / "pudato" / "demo_data" / "la_budget"
FY1718 = "general_fund_revenue_fy2017-18.csv"
FY2122 = "general_fund_revenue_fy2021-22.csv"

JOIN = """
SELECT n.dept_code, n.dept_name, count(*) AS accounts
FROM budget.revenue_2122 AS n
JOIN budget.revenue_1718 AS o ON ltrim(n.dept_code, '0') = o.dept_code AND n.account_code = o.account_code
GROUP BY ALL ORDER BY n.dept_code
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        storage={"backend": "local", "local_root": tmp_path / "objects"},
        warehouse={"path": tmp_path / "db" / "warehouse.duckdb", "lock_timeout_s": 5, "max_rows": 500},
    )


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    store = LocalStorage(settings.storage.local_root)
    for name in (FY1718, FY2122):
        store.put_file(f"raw/{name}", LA / name)
    return store


@pytest.fixture
def warehouse(settings: Settings) -> DuckDBWarehouse:
    return DuckDBWarehouse.from_settings(settings)


@pytest.fixture
def query(settings: Settings, storage: LocalStorage, warehouse: DuckDBWarehouse) -> QueryHandler:
    return QueryHandler(settings, storage, warehouse)


@pytest.fixture
def loaded(settings: Settings, storage: LocalStorage, warehouse: DuckDBWarehouse) -> None:
    tables = TableHandler(settings, storage, warehouse)
    for table, name in (("budget.revenue_1718", FY1718), ("budget.revenue_2122", FY2122)):
        result = tables.execute(
            Command(handler="table", action="load", payload={"table": table, "key": f"raw/{name}", "all_varchar": True})
        )
        assert result.status == "succeeded", result.error


def run(handler: QueryHandler, **payload) -> Result:
    return handler.execute(Command(handler="query", action="run", payload=payload, job_id="job-1"))


def ok(result: Result) -> Result:
    assert result.status == "succeeded", result.error
    return result


def test_join_of_two_loaded_tables_lists_both_as_inputs(query, loaded):
    result = ok(run(query, sql=JOIN))
    assert result.data["columns"] == [
        {"name": "dept_code", "type": "VARCHAR"},
        {"name": "dept_name", "type": "VARCHAR"},
        {"name": "accounts", "type": "BIGINT"},
    ]
    assert result.data["row_count"] == len(result.data["rows"]) > 0
    assert result.data["rows"][0][0] == "02"
    assert result.data["truncated"] is False
    assert sorted((i.namespace, i.name) for i in result.inputs) == [
        ("duckdb://warehouse", "budget.revenue_1718"),
        ("duckdb://warehouse", "budget.revenue_2122"),
    ]
    (execution,) = result.executions
    assert execution.engine == "duckdb"
    assert "JOIN budget.revenue_1718" in execution.statement
    assert execution.rows == result.data["row_count"]
    assert result.outputs == []
    assert result.events == []


def test_inputs_resolve_qualified_quoted_and_cased_names(query, loaded):
    sql = 'SELECT count(*) FROM warehouse.budget."Revenue_2122" r, (SELECT 1 FROM Budget.revenue_1718 LIMIT 1)'
    result = ok(run(query, sql=sql))
    assert sorted(i.name for i in result.inputs) == ["budget.revenue_1718", "budget.revenue_2122"]
    cte = ok(run(query, sql="WITH x AS (SELECT 1 AS a) SELECT * FROM x"))
    assert cte.inputs == []


def test_limit_truncates_and_is_bounded_by_max_rows(query, loaded):
    result = ok(run(query, sql="SELECT * FROM budget.revenue_2122", limit=10))
    assert result.data["row_count"] == 10
    assert result.data["truncated"] is True
    exact = ok(run(query, sql="SELECT * FROM range(10)", limit=10))
    assert exact.data["truncated"] is False
    too_big = run(query, sql="SELECT 1", limit=501)
    assert too_big.error.type == "InvalidCommand"
    assert "max_rows" in too_big.error.message


def test_values_are_json_safe(query):
    sql = (
        "SELECT DATE '2024-02-29' AS d, TIMESTAMP '2024-01-01 12:30:00' AS ts, 12.50::DECIMAL(10,2) AS money, "
        "'nan'::DOUBLE AS nan, [1, 2] AS list, {'a': DATE '2024-01-01'} AS struct, NULL AS nothing, "
        "INTERVAL 3 DAY AS gap, '\\x01'::BLOB AS blob, true AS flag, 1.5::DOUBLE AS f"
    )
    result = ok(run(query, sql=sql))
    (row,) = result.data["rows"]
    assert row[:4] == ["2024-02-29", "2024-01-01T12:30:00", "12.50", "nan"]
    assert row[4:8] == [[1, 2], {"a": "2024-01-01"}, None, "3 days, 0:00:00"]
    assert row[9:] == [True, 1.5]
    json.dumps(result.model_dump(mode="json"))


def test_bad_sql_fails_with_duckdbs_message(query):
    result = run(query, sql="SELEC 1")
    assert result.status == "failed"
    assert result.error.type == "QueryFailed"
    assert "syntax error" in result.error.message
    assert result.error.kind == "terminal"
    missing = run(query, sql="SELECT * FROM no_such_table")
    assert missing.error.type == "QueryFailed"
    assert "no_such_table" in missing.error.message
    binder = run(query, sql="SELECT no_such_column FROM range(1)")
    assert binder.error.type == "QueryFailed"
    assert "no_such_column" in binder.error.message
    conversion = run(query, sql="SELECT 'abc'::INTEGER")
    assert conversion.error.type == "QueryFailed"
    assert "Conversion" in conversion.error.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "DROP TABLE budget.revenue_1718",
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO budget.revenue_1718 (dept_code) VALUES ('x')",
        "ATTACH '/tmp/other.duckdb'",
        "COPY budget.revenue_1718 TO '/tmp/out.csv'",
        "SET enable_external_access = true",
        "-- only a comment",
    ],
)
def test_only_one_select_is_allowed(query, loaded, warehouse, sql):
    result = run(query, sql=sql)
    assert result.error.type == "InvalidCommand", result.error
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM budget.revenue_1718").fetchone() == (1161,)


def test_sql_cannot_read_files_it_was_not_given(query, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    for sql in [f"SELECT * FROM read_csv('{secret}')", f"SELECT * FROM '{secret}'", "SELECT * FROM glob('/*')"]:
        result = run(query, sql=sql)
        assert result.error.type == "UnsafeInput", (sql, result.error)


def test_storage_sources_become_views_and_inputs(query, storage):
    storage.put_bytes("raw/cp.csv", "name,amount\nCafé,1\nSeñor €,2\n".encode("cp1252"))
    result = ok(run(
        query,
        # Read as a load reads it: normalized names, the types a load infers.
        sql="SELECT f.name, o.dept_code FROM f, old o WHERE o.dept_code = '2' AND f.amount = 2 LIMIT 1",
        sources={"f": {"key": "raw/cp.csv"}, "old": {"key": f"raw/{FY1718}", "format": "csv"}},
    ))
    assert result.data["rows"] == [["Señor €", "2"]]
    assert sorted(Path(i.name).name for i in result.inputs) == ["cp.csv", FY1718]
    assert all(i.namespace == "file" and "sha256" in i.facets for i in result.inputs)


def test_source_errors(query, storage):
    assert run(query, sql="SELECT 1", sources={"x": {"key": "raw/missing.csv"}}).error.type == "NotFound"
    assert run(query, sql="SELECT 1", sources={"bad alias": {"key": f"raw/{FY1718}"}}).error.type == "UnsafeInput"
    assert run(query, sql="SELECT 1", sources={"x": {"key": "../etc/passwd"}}).error.type == "UnsafeInput"
    assert run(query, sql="SELECT 1", sources={"x": {"key": "raw/a.bin"}}).error.type == "NotFound"
    storage.put_bytes("raw/a.bin", b"a\n1\n")
    assert run(query, sql="SELECT 1", sources={"x": {"key": "raw/a.bin"}}).error.type == "InvalidCommand"
    given = ok(run(query, sql="SELECT * FROM x", sources={"x": {"key": "raw/a.bin", "format": "csv"}}))
    assert given.data["rows"] == [[1]]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_output_writes_the_whole_result_to_storage(query, loaded, storage, tmp_path, fmt):
    key = f"results/join.{fmt}"
    result = ok(run(query, sql=JOIN + " -- trailing comment", limit=1, output={"key": key, "format": fmt}))
    info = storage.head(key)
    (output,) = result.outputs
    assert output.same_dataset(storage.reference(key))
    assert output.facets["sha256"] == info.sha256
    rows = output.facets["rows"]
    assert rows == result.data["row_count"] > 1  # limit bounds returned rows, not written ones
    assert [c["name"] for c in output.facets["columns"]] == ["dept_code", "dept_name", "accounts"]
    assert [e.type for e in result.events] == ["query.written"]
    assert len(result.inputs) == 2
    with storage.local_path(key) as path:
        reader = "read_parquet" if fmt == "parquet" else "read_csv"
        con = duckdb.connect()
        assert con.execute(f"SELECT count(*) FROM {reader}('{path}')").fetchone() == (rows,)
        con.close()


def test_output_key_is_checked_before_running(query):
    result = run(query, sql="SELECT 1", output={"key": "../outside.parquet"})
    assert result.error.type == "UnsafeInput"


def test_query_on_a_fresh_warehouse_and_missing_payload(query, warehouse):
    assert ok(run(query, sql="SELECT 42 AS answer")).data["rows"] == [[42]]
    assert warehouse.path.exists()
    missing = query.execute(Command(handler="query", action="run", payload={}))
    assert missing.error.type == "InvalidCommand"
    assert "sql" in missing.error.message
    unknown = query.execute(Command(handler="query", action="explain", payload={"sql": "SELECT 1"}))
    assert unknown.error.type == "InvalidCommand"


def test_a_failed_query_keeps_its_inputs(query, loaded, storage):
    storage.put_bytes("raw/n.csv", b"n\n1\n")
    result = run(query, sql="SELECT no_such_column FROM budget.revenue_1718, f", sources={"f": {"key": "raw/n.csv"}})
    assert result.status == "failed"
    names = [i.name for i in result.inputs]
    assert "budget.revenue_1718" in names
    assert any(name.endswith("raw/n.csv") for name in names)
