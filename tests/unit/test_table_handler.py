"""The table handler on a local folder and a DuckDB file: loads of messy CSVs, row writes, catalogue actions."""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path

import duckdb
import pytest

from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.handlers.table import TableHandler
from pudato.protocol import Command, Result
from pudato.settings import Settings

LA = Path(__file__).resolve().parents[2] / "pudato" / "demo_data" / "la_budget"
FY1718 = "general_fund_revenue_fy2017-18.csv"
FY2122 = "general_fund_revenue_fy2021-22.csv"


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    store = LocalStorage(settings.storage.local_root)
    for name in (FY1718, FY2122):
        store.put_file(f"raw/{name}", LA / name)
    return store


def run(handler: TableHandler, action: str, **payload) -> Result:
    return handler.execute(Command(handler="table", action=action, payload=payload, job_id="job-1"))


def ok(result: Result) -> Result:
    assert result.status == "succeeded", result.error
    return result


def fetch(warehouse: DuckDBWarehouse, sql: str) -> list[tuple]:
    with warehouse.connect(read_only=True) as con:
        return con.execute(sql).fetchall()


# -- the LA budget files -------------------------------------------------------


def test_load_fy2122_strips_bom_drops_blank_record_and_keeps_leading_zeros(tables, warehouse):
    result = ok(run(tables, "load", table="budget.revenue_2122", key=f"raw/{FY2122}", all_varchar=True))

    # 1,759 records by the csv module: header, 1,757 data rows, and a final record of empty fields.
    assert result.data["rows"] == result.data["loaded"] == 1757
    names = [c["name"] for c in result.data["columns"]]
    assert names[0] == "dept_code"
    assert not names[0].startswith("\ufeff")
    assert names[:3] == ["dept_code", "dept_name", "org_level_5_code"]
    assert "_2021_22_adopted" in names
    assert result.data["renamed"]["2019-20 Actuals"] == "_2019_20_actuals"
    assert result.data["encoding"] == "utf-8-sig"
    codes = {row[0] for row in fetch(warehouse, "SELECT DISTINCT dept_code FROM budget.revenue_2122")}
    assert "02" in codes
    assert "2" not in codes
    assert fetch(warehouse, "SELECT count(*) FROM budget.revenue_2122 WHERE dept_code IS NULL") == [(0,)]
    # CRLF must not leak into the last column.
    assert fetch(warehouse, "SELECT count(*) FROM budget.revenue_2122 WHERE _2021_22_adopted LIKE '%\r%'") == [(0,)]


def test_load_reports_lineage_executions_and_an_event(tables):
    result = ok(run(tables, "load", table="budget.revenue_2122", key=f"raw/{FY2122}", all_varchar=True))
    sha = hashlib.sha256((LA / FY2122).read_bytes()).hexdigest()

    (source,) = result.inputs
    assert source.namespace == "file"
    assert source.name.endswith(f"raw/{FY2122}")
    assert source.facets["sha256"] == sha
    (output,) = result.outputs
    assert (output.namespace, output.name) == ("duckdb://warehouse", "budget.revenue_2122")
    assert output.facets["rows"] == 1757
    assert output.facets["source_sha256"] == sha
    assert {"name": "dept_code", "type": "VARCHAR"} in output.facets["columns"]
    load = [e for e in result.executions if "CREATE OR REPLACE TABLE" in e.statement]
    assert load
    assert load[0].engine == "duckdb"
    assert load[0].rows == 1757
    assert [e.type for e in result.events] == ["table.loaded"]
    assert result.events[0].dataset.same_dataset(output)
    assert result.events[0].job_id == "job-1"


def test_load_fy1718(tables, warehouse):
    result = ok(run(tables, "load", table="budget.revenue_1718", key=f"raw/{FY1718}", all_varchar=True))
    assert result.data["rows"] == 1161  # 1,162 lines: a header and 1,161 records, no blank one
    assert result.data["encoding"] == "utf-8"
    assert [c["name"] for c in result.data["columns"]][:3] == ["dept_code", "department_name", "program_code"]
    assert ("2",) in fetch(warehouse, "SELECT DISTINCT dept_code FROM budget.revenue_1718")


def test_typed_load_sniffs_types_and_loses_leading_zeros(tables):
    result = ok(run(tables, "load", table="revenue", key=f"raw/{FY2122}"))
    types = {c["name"]: c["type"] for c in result.data["columns"]}
    assert types["fund_code"] in ("BIGINT", "INTEGER")
    assert types["dept_code"] == "VARCHAR"  # codes like "OTHERSPF" keep it text


def test_skip_blank_records_off_keeps_the_empty_record(tables):
    result = ok(
        run(tables, "load", table="raw_2122", key=f"raw/{FY2122}", all_varchar=True, skip_blank_records=False)
    )
    assert result.data["rows"] == 1758


def test_normalize_headers_off_keeps_the_file_names(tables):
    result = ok(run(tables, "load", table="raw_1718", key=f"raw/{FY1718}", normalize_headers=False))
    assert result.data["columns"][0]["name"] == "Dept Code"
    assert result.data["renamed"] == {}


# -- encodings, delimiters, formats ----------------------------------------------


CP1252_BYTES = "name;amount\r\nCafé Olé;1\r\nSeñor €;2\r\n".encode("cp1252")


@pytest.mark.parametrize("encoding", ["auto", "cp1252", "windows-1252"])
def test_cp1252_csv_loads_with_auto_or_explicit_encoding(tables, storage, warehouse, encoding):
    storage.put_bytes("raw/cp.csv", CP1252_BYTES)
    result = ok(run(tables, "load", table="cp", key="raw/cp.csv", encoding=encoding))
    assert result.data["encoding"] == "cp1252"
    assert fetch(warehouse, "SELECT name, amount FROM cp ORDER BY amount") == [("Café Olé", 1), ("Señor €", 2)]


def test_latin1_csv_with_explicit_encoding(tables, storage, warehouse):
    storage.put_bytes("raw/l1.csv", "name,code\nMüller,007\n".encode("latin-1"))
    ok(run(tables, "load", table="l1", key="raw/l1.csv", encoding="latin-1", all_varchar=True))
    assert fetch(warehouse, "SELECT name, code FROM l1") == [("Müller", "007")]


def test_utf16_csv_is_sniffed_by_its_bom(tables, storage, warehouse):
    storage.put_bytes("raw/u16.csv", "Año,Value\n2024,ñ\n".encode("utf-16"))
    result = ok(run(tables, "load", table="u16", key="raw/u16.csv"))
    assert result.data["encoding"] == "utf-16"
    assert [c["name"] for c in result.data["columns"]] == ["ano", "value"]
    assert fetch(warehouse, "SELECT value FROM u16") == [("ñ",)]


def test_explicit_utf8_on_a_cp1252_file_fails_with_our_message(tables, storage):
    storage.put_bytes("raw/cp.csv", CP1252_BYTES)
    result = run(tables, "load", table="cp", key="raw/cp.csv", encoding="utf-8")
    assert result.status == "failed"
    assert result.error.type == "InvalidCommand"
    assert "not valid utf-8" in result.error.message
    assert "cp1252" in result.error.message
    assert "pudato-csv-" not in result.error.message


def test_explicit_utf8_still_strips_a_bom(tables, storage):
    storage.put_bytes("raw/bom.csv", codecs.BOM_UTF8 + b"Code,Name\r\n01,a\r\n")
    result = ok(run(tables, "load", table="bom", key="raw/bom.csv", encoding="utf-8", all_varchar=True))
    assert result.data["columns"][0]["name"] == "code"


def test_unknown_encoding_is_an_invalid_command(tables, storage):
    result = run(tables, "load", table="x", key=f"raw/{FY1718}", encoding="klingon-8")
    assert result.error.type == "InvalidCommand"
    assert "klingon-8" in result.error.message


def test_delimiter_sniffed_or_given_and_duplicate_headers_get_suffixes(tables, storage):
    storage.put_bytes("raw/semi.csv", b"A b;a-b;A_B;;1st\n1;2;3;4;5\n")
    sniffed = ok(run(tables, "load", table="semi", key="raw/semi.csv"))
    given = ok(run(tables, "load", table="semi2", key="raw/semi.csv", delimiter=";"))
    for result in (sniffed, given):
        assert [c["name"] for c in result.data["columns"]][:3] == ["a_b", "a_b_2", "a_b_3"]
        assert [c["name"] for c in result.data["columns"]][4] == "_1st"


def test_headerless_csv(tables, storage, warehouse):
    storage.put_bytes("raw/nohead.csv", b"1,x\n2,y\n")
    result = ok(run(tables, "load", table="nohead", key="raw/nohead.csv", header=False))
    assert result.data["rows"] == 2
    assert len(result.data["columns"]) == 2


def test_append_adds_rows_and_creates_a_missing_table(tables, storage):
    storage.put_bytes("raw/a.csv", b"id,name\n1,a\n")
    storage.put_bytes("raw/b.csv", b"name,id\nb,2\n")  # column order differs: append goes by name
    first = ok(run(tables, "load", table="s.t", key="raw/a.csv", mode="append"))
    second = ok(run(tables, "load", table="s.t", key="raw/b.csv", mode="append"))
    assert (first.data["rows"], second.data["rows"], second.data["loaded"]) == (1, 2, 1)


def test_append_with_an_unknown_column_adds_it_and_reports_the_drift(tables, storage):
    storage.put_bytes("raw/a.csv", b"id\n1\n")
    storage.put_bytes("raw/b.csv", b"other\n2\n")
    ok(run(tables, "load", table="t", key="raw/a.csv"))
    result = ok(run(tables, "load", table="t", key="raw/b.csv", mode="append"))
    assert result.data["drift"]["added"] == ["other"]
    assert result.data["drift"]["removed"] == ["id"]
    assert [c["name"] for c in result.data["columns"]] == ["id", "other"]


def test_append_with_an_unknown_column_fails_when_the_contract_says_so(tables, storage):
    storage.put_bytes("raw/a.csv", b"id\n1\n")
    storage.put_bytes("raw/b.csv", b"other\n2\n")
    ok(run(tables, "load", table="t", key="raw/a.csv"))
    contract = {"policies": {"added": "fail"}}
    result = run(tables, "load", table="t", key="raw/b.csv", mode="append", contract=contract)
    assert result.error.type == "DriftRefused"
    assert result.error.details["drift"]["added"] == ["other"]
    assert [e.type for e in result.events] == ["dataset.drifted"]


def test_json_and_parquet_loads(tables, storage, tmp_path):
    storage.put_bytes("raw/rows.jsonl", b'{"Id": 1, "Full Name": "a"}\n{"Id": 2, "Full Name": "b"}\n')
    result = ok(run(tables, "load", table="people", key="raw/rows.jsonl"))
    assert [c["name"] for c in result.data["columns"]] == ["id", "full_name"]
    assert result.data["rows"] == 2

    parquet = tmp_path / "x.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT range AS n FROM range(5)) TO '{parquet}' (FORMAT parquet)")
    con.close()
    storage.put_file("raw/x.parquet", parquet)
    assert ok(run(tables, "load", table="nums", key="raw/x.parquet")).data["rows"] == 5


def test_unknown_suffix_needs_a_format(tables, storage):
    storage.put_bytes("raw/data.bin", b"a\n1\n")
    assert run(tables, "load", table="t", key="raw/data.bin").error.type == "InvalidCommand"
    assert ok(run(tables, "load", table="t", key="raw/data.bin", format="csv")).data["rows"] == 1


def test_missing_object_is_not_found(tables):
    result = run(tables, "load", table="t", key="raw/missing.csv")
    assert result.status == "failed"
    assert result.error.type == "NotFound"
    assert result.error.kind == "terminal"


# -- create, insert, upsert ----------------------------------------------------------


def test_create_then_if_not_exists(tables):
    created = ok(run(tables, "create", table="ref.depts", columns={"code": "VARCHAR", "budget": "DECIMAL(18,2)"},
                     primary_key=["code"]))
    assert created.data["created"] is True
    assert created.outputs[0].facets["columns"] == [
        {"name": "code", "type": "VARCHAR"},
        {"name": "budget", "type": "DECIMAL(18,2)"},
    ]
    assert [e.type for e in created.events] == ["table.created"]
    again = run(tables, "create", table="ref.depts", columns={"code": "VARCHAR"})
    assert again.error.type == "InvalidCommand"
    assert "already exists" in again.error.message
    assert ok(run(tables, "create", table="ref.depts", columns={"code": "VARCHAR"}, if_not_exists=True)).data[
        "created"
    ] is False


@pytest.mark.parametrize("bad_type", [
    "INT; DROP TABLE x", "VARCHAR DEFAULT 'x'", "INT -- c", "", "INTEGER DEFAULT 5", "VARCHAR DEFAULT current_user",
    "INTEGER GENERATED ALWAYS AS (1)", "INTEGER AS (42)", "VARCHAR NOT NULL", "INTEGER PRIMARY KEY",
    "INTEGER CHECK (a)", "VARCHAR COLLATE nocase", "DECIMAL(18,2) DEFAULT 0", "INTEGER UNIQUE",
    "STRUCT(a INTEGER)", "DECIMAL(abs(1))",
])
def test_create_refuses_types_that_are_not_plain(tables, bad_type):
    result = run(tables, "create", table="t", columns={"a": bad_type})
    assert result.error.type == "InvalidCommand"
    assert "not a plain DuckDB type" in result.error.message


def test_create_accepts_type_names_with_precision_and_scale(tables):
    columns = {"a": "DECIMAL(18,2)", "b": "DOUBLE PRECISION", "c": "TIMESTAMP WITH TIME ZONE", "d": "VARCHAR(20)",
               "e": "INTEGER[]", "f": "numeric(10, 3)", "g": "BIGINT"}
    created = ok(run(tables, "create", table="typed", columns=columns))
    assert [c["name"] for c in created.outputs[0].facets["columns"]] == list(columns)


def test_insert_rows_with_values_as_parameters(tables, warehouse):
    ok(run(tables, "create", table="t", columns={"id": "INTEGER", "name": "VARCHAR", "day": "DATE"}))
    result = ok(run(tables, "insert", table="t", rows=[
        {"id": 1, "name": "Robert'); DROP TABLE t;--", "day": "2024-01-31"},
        {"ID": 2},  # names match case-insensitively; left-out columns are NULL
    ]))
    assert result.data == {"table": "main.t", "inserted": 2, "rows": 2}
    assert result.outputs[0].facets["rows"] == 2
    assert fetch(warehouse, "SELECT id, name, CAST(day AS VARCHAR) FROM t ORDER BY id") == [
        (1, "Robert'); DROP TABLE t;--", "2024-01-31"),
        (2, None, None),
    ]


def test_insert_many_rows_in_chunks(tables, warehouse):
    ok(run(tables, "create", table="t", columns={"a": "INTEGER", "b": "INTEGER", "c": "INTEGER"}))
    rows = [{"a": i, "b": i, "c": i} for i in range(10_000)]
    assert ok(run(tables, "insert", table="t", rows=rows)).data["inserted"] == 10_000
    assert fetch(warehouse, "SELECT sum(a) FROM t") == [(sum(range(10_000)),)]


def test_insert_refuses_unknown_columns_and_missing_tables(tables):
    ok(run(tables, "create", table="t", columns={"a": "INTEGER"}))
    unknown = run(tables, "insert", table="t", rows=[{"a": 1, "nope": 2}])
    assert unknown.error.type == "InvalidCommand"
    assert "nope" in unknown.error.message
    assert run(tables, "insert", table="missing", rows=[{"a": 1}]).error.type == "NotFound"
    assert run(tables, "insert", table="t", rows=[]).error.type == "InvalidCommand"
    too_many = run(tables, "insert", table="t", rows=[{"a": 1}] * 10_001)
    assert too_many.error.type == "InvalidCommand"


def test_bad_values_fail_as_query_failed(tables):
    ok(run(tables, "create", table="t", columns={"a": "INTEGER"}))
    result = run(tables, "insert", table="t", rows=[{"a": "not a number"}])
    assert result.error.type == "QueryFailed"
    assert "not a number" in result.error.message


def test_upsert_updates_matches_inserts_the_rest_and_keeps_unmentioned_columns(tables, warehouse):
    ok(run(tables, "create", table="depts", columns={"code": "VARCHAR", "name": "VARCHAR", "budget": "INTEGER"}))
    ok(run(tables, "insert", table="depts", rows=[
        {"code": "02", "name": "Aging", "budget": 10},
        {"code": "06", "name": "Building", "budget": 20},
    ]))
    result = ok(run(tables, "upsert", table="depts", key=["code"], rows=[
        {"code": "02", "budget": 11},
        {"code": "08", "name": "City Attorney", "budget": 30},
    ]))
    assert (result.data["inserted"], result.data["updated"], result.data["rows"]) == (1, 1, 3)
    assert any("MERGE INTO" in e.statement for e in result.executions)
    assert fetch(warehouse, "SELECT code, name, budget FROM depts ORDER BY code") == [
        ("02", "Aging", 11),
        ("06", "Building", 20),
        ("08", "City Attorney", 30),
    ]


def test_upsert_with_a_composite_key_of_only_key_columns(tables, warehouse):
    ok(run(tables, "create", table="pairs", columns={"a": "INTEGER", "b": "INTEGER"}))
    ok(run(tables, "insert", table="pairs", rows=[{"a": 1, "b": 1}]))
    result = ok(run(tables, "upsert", table="pairs", key=["a", "b"], rows=[{"a": 1, "b": 1}, {"a": 1, "b": 2}]))
    assert (result.data["inserted"], result.data["updated"]) == (1, 1)
    assert fetch(warehouse, "SELECT count(*) FROM pairs") == [(2,)]


def test_upsert_refuses_repeated_or_missing_keys(tables, warehouse):
    ok(run(tables, "create", table="t", columns={"k": "INTEGER", "v": "VARCHAR"}))
    repeated = run(tables, "upsert", table="t", key=["k"], rows=[{"k": 1, "v": "a"}, {"k": 1, "v": "b"}])
    assert repeated.error.type == "InvalidCommand"
    assert "repeat" in repeated.error.message
    missing = run(tables, "upsert", table="t", key=["k"], rows=[{"v": "a"}])
    assert missing.error.type == "InvalidCommand"
    assert run(tables, "upsert", table="t", key=["nope"], rows=[{"k": 1}]).error.type == "InvalidCommand"
    assert fetch(warehouse, "SELECT count(*) FROM t") == [(0,)]  # the failed upserts rolled back


# -- describe, list, drop -------------------------------------------------------------


def test_describe_list_drop(tables):
    ok(run(tables, "load", table="budget.revenue_1718", key=f"raw/{FY1718}", all_varchar=True))
    ok(run(tables, "create", table="other", columns={"a": "INTEGER"}))

    described = ok(run(tables, "describe", table="BUDGET.Revenue_1718"))  # names match case-insensitively
    assert described.data["table"] == "budget.revenue_1718"
    assert described.data["rows"] == 1161
    assert len(described.data["columns"]) == 13
    assert described.inputs[0].name == "budget.revenue_1718"

    listed = ok(run(tables, "list")).data["tables"]
    assert listed == [
        {"table": "budget.revenue_1718", "kind": "table", "rows": 1161},
        {"table": "main.other", "kind": "table", "rows": 0},
    ]
    assert ok(run(tables, "list", schema="budget")).data["tables"] == listed[:1]

    dropped = ok(run(tables, "drop", table="other"))
    assert dropped.data["dropped"] is True
    assert [e.type for e in dropped.events] == ["table.dropped"]
    assert run(tables, "describe", table="other").error.type == "NotFound"
    assert run(tables, "drop", table="other").error.type == "NotFound"
    assert ok(run(tables, "drop", table="other", if_exists=True)).data["dropped"] is False


def test_list_and_describe_on_a_fresh_warehouse(tables, warehouse):
    assert ok(run(tables, "list")).data == {"database": "warehouse", "tables": []}
    assert warehouse.path.exists()
    assert run(tables, "describe", table="nothing").error.type == "NotFound"


# -- refused input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ['t"; DROP TABLE x; --', "a.b.c", "1abc", "a-b", "", "x" * 64, "main.", "ta ble"]
)
def test_unsafe_table_names_are_refused(tables, name):
    for action, payload in [
        ("describe", {}),
        ("drop", {}),
        ("create", {"columns": {"a": "INTEGER"}}),
        ("load", {"key": f"raw/{FY1718}"}),
    ]:
        result = run(tables, action, table=name, **payload)
        assert result.error.type == "UnsafeInput", (action, result.error)


def test_unsafe_schema_in_list_is_refused(tables):
    assert run(tables, "list", schema="main; DROP").error.type == "UnsafeInput"


def test_unknown_action_and_missing_fields_are_invalid_commands(tables):
    unknown = run(tables, "truncate", table="t")
    assert unknown.error.type == "InvalidCommand"
    assert "known actions" in unknown.error.message
    missing = run(tables, "load", table="t")
    assert missing.error.type == "InvalidCommand"
    assert "key" in missing.error.message
    extra = run(tables, "describe", table="t", colour="red")
    assert extra.error.type == "InvalidCommand"
    wrong_handler = tables.execute(Command(handler="query", action="run", payload={}))
    assert wrong_handler.error.type == "InvalidCommand"


def test_views_are_described_and_listed_without_running_them(tables, warehouse):
    ok(run(tables, "create", table="t", columns={"a": "INTEGER"}))
    with warehouse.connect() as con:
        con.execute("CREATE VIEW v AS SELECT a * 2 AS doubled FROM t")
    described = ok(run(tables, "describe", table="v"))
    assert described.data["kind"] == "view"
    assert "rows" not in described.data
    assert described.data["columns"] == [{"name": "doubled", "type": "INTEGER"}]
    assert {"table": "main.v", "kind": "view"} in ok(run(tables, "list")).data["tables"]
    assert run(tables, "drop", table="v").error.type == "NotFound"  # drop is for tables


def test_insert_converts_json_values_to_column_types(tables, warehouse):
    columns = {"amount": "DECIMAL(18,2)", "tags": "VARCHAR[]", "at": "TIMESTAMP", "flag": "BOOLEAN", "n": "BIGINT"}
    ok(run(tables, "create", table="typed", columns=columns))
    ok(run(tables, "insert", table="typed", rows=[
        {"amount": 12.34, "tags": ["a", "b"], "at": "2024-01-02 03:04:05", "flag": True, "n": 2**40},
        {"amount": "5", "flag": False},
    ]))
    # "at" is an SQL keyword: the handler quotes every name, so it is a fine column name.
    sql = 'SELECT CAST(amount AS VARCHAR), tags, CAST("at" AS VARCHAR), flag, n FROM typed ORDER BY amount'
    assert fetch(warehouse, sql) == [
        ("5.00", None, None, False, None),
        ("12.34", ["a", "b"], "2024-01-02 03:04:05", True, 2**40),
    ]
