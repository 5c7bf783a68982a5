"""Loads of real messy releases: target types on append, nothing coerced, rejects kept, drift reported."""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from pathlib import Path

import duckdb
import pytest

from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.backends.warehouse.engine import load_extension
from pudato.handlers.table import TableHandler
from pudato.protocol import Command, Result
from pudato.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "incorrigible"
LA = Path(__file__).resolve().parents[2] / "pudato" / "demo_data" / "la_budget"
DATE_FORMAT = {"paid_date": "%d/%m/%Y"}


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    store = LocalStorage(settings.storage.local_root)
    for path in [*DATA.glob("*.csv"), *LA.glob("*.csv")]:
        store.put_file(f"raw/{path.name}", path)
    return store


def run(handler: TableHandler, **payload) -> Result:
    return handler.execute(Command(handler="table", action="load", payload=payload, job_id="job-1"))


def ok(result: Result) -> Result:
    assert result.status == "succeeded", result.error
    return result


def fetch(warehouse: DuckDBWarehouse, sql: str) -> list[tuple]:
    with warehouse.connect(read_only=True) as con:
        return con.execute(sql).fetchall()


def test_an_append_keeps_dates_as_written_when_the_table_holds_text(tables, warehouse):
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q1.csv"))
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q3.csv", mode="append"))
    values = [v for (v,) in fetch(warehouse, "SELECT paid_date FROM spend WHERE paid_date IS NOT NULL")]
    assert "15/07/2014" in values
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4}", v) for v in values)


def test_dates_parse_by_the_column_format_in_every_release(tables, warehouse):
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q3.csv", date_formats=DATE_FORMAT))
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q1.csv", mode="append", date_formats=DATE_FORMAT))
    kinds = fetch(warehouse, "SELECT DISTINCT typeof(paid_date) FROM spend")
    assert kinds == [("DATE",)]
    written = (DATA / "oxford_spend_2014_q3.csv").read_text().count(",15/07/2014,")
    assert fetch(warehouse, "SELECT count(*) FROM spend WHERE paid_date = DATE '2014-07-15'") == [(written,)]


def test_a_value_that_does_not_fit_the_target_type_is_rejected_and_kept(tables, warehouse):
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q3.csv", date_formats=DATE_FORMAT))
    result = ok(run(tables, table="spend", key="raw/oxford_spend_2014_q2.csv", mode="append", date_formats=DATE_FORMAT))
    validation = result.data["validation"]
    assert validation["counts"] == {"type": 20}
    first = validation["errors"][0]
    assert {k: first[k] for k in ("row", "column", "value", "reason", "expected")} == {
        "row": 1, "column": "paid_date", "value": "00:00:00", "reason": "type", "expected": "DATE in format %d/%m/%Y",
    }
    assert first["fix"].startswith("date_formats")
    kept = fetch(warehouse, 'SELECT "row", reasons, record FROM spend__rejected ORDER BY "row" LIMIT 1')
    assert kept[0][1] == "paid_date: type"
    assert '"Paid Date":"00:00:00"' in kept[0][2]
    assert fetch(warehouse, "SELECT count(*) FROM spend") == [(40,)]
    assert result.outputs[1].name.endswith("spend__rejected")


def test_max_rejected_fails_the_load_and_writes_nothing(tables, warehouse):
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q3.csv", date_formats=DATE_FORMAT))
    result = run(
        tables,
        table="spend",
        key="raw/oxford_spend_2014_q2.csv",
        mode="append",
        date_formats=DATE_FORMAT,
        max_rejected="10%",
    )
    assert result.status == "failed"
    assert "20 of 20 rows were rejected" in result.error.message
    assert result.error.details["validation"]["counts"] == {"type": 20}
    assert fetch(warehouse, "SELECT count(*) FROM spend") == [(40,)]


def test_a_short_record_and_trailing_blank_lines_load_and_are_reported(tables, warehouse):
    result = ok(run(tables, table="la", key="raw/la_gf_revenue_short_record.csv"))
    short = result.data["validation"]["short_records"]
    assert short == {"count": 1, "rows": [{"row": 31, "fields": 10, "expected": 13}]}
    assert result.data["rows"] == 31
    assert fetch(warehouse, "SELECT account_code, _2016_17_adopted_budget FROM la WHERE account_code = 5301") == [
        (5301, None)
    ]


def test_money_is_decimal_and_sums_exactly(tables, warehouse):
    result = ok(run(tables, table="spend", key="raw/oxford_spend_2014_q1.csv"))
    types = {c["name"]: c["type"] for c in result.data["columns"]}
    assert types["amount"] == "DECIMAL(18,2)"
    assert types["expenditure_code"] == "VARCHAR"
    total = fetch(warehouse, "SELECT CAST(sum(amount) AS VARCHAR) FROM spend")[0][0]
    assert re.fullmatch(r"\d+\.\d\d", total)


def test_null_tokens_separators_currency_and_parenthesised_negatives(tables, storage, warehouse):
    # Rows of the Oxford release, with amounts spelled as spreadsheets print them.
    storage.put_bytes(
        "raw/printed.csv",
        (
            "Trans No,Amount,Supplier ID\n"
            '46279931_1,"£1,500.00",20000000_46279931\n'
            '46279973_1,"(£100,565.40)",N/A\n'
            "46280978_1,N/A,-\n"
        ).encode(),
    )
    result = ok(
        run(
            tables,
            table="printed",
            key="raw/printed.csv",
            thousands=",",
            currency=["£"],
            negative_parentheses=True,
            null_tokens=["", "N/A", "-"],
            types={"amount": "decimal(12,2)"},
        )
    )
    assert result.data["validation"]["rejected"] == 0
    rows = fetch(warehouse, "SELECT CAST(amount AS VARCHAR), supplier_id FROM printed ORDER BY trans_no")
    assert rows == [("1500.00", "20000000_46279931"), ("-100565.40", None), (None, None)]


def test_more_decimals_than_the_type_holds_is_a_rejection_not_a_rounding(tables, storage, warehouse):
    storage.put_bytes("raw/m.csv", b"id,amount\n1,12.34\n2,12.345\n")
    result = ok(run(tables, table="m", key="raw/m.csv", types={"amount": "decimal(10,2)"}))
    assert result.data["validation"]["errors"][0]["value"] == "12.345"
    assert fetch(warehouse, "SELECT CAST(amount AS VARCHAR) FROM m") == [("12.34",)]


def test_releases_drift_by_similarity_but_never_across_fiscal_years(tables):
    contract = {"policies": {"added": "warn"}}
    ok(run(tables, table="gf", key="raw/general_fund_revenue_fy2017-18.csv", all_varchar=True, contract=contract))
    result = ok(run(tables, table="gf", key="raw/general_fund_revenue_fy2021-22.csv", mode="append", contract=contract))
    drift = result.data["drift"]
    renamed = {r["to"]: r for r in drift["renamed"]}
    assert renamed["program_code"] == {
        "from": "Prog Code",
        "to": "program_code",
        "by": "similarity",
        "similarity": 0.86,
    }
    assert renamed["department_name"]["from"] == "Dept Name"
    assert not any(r["from"].startswith("20") for r in drift["renamed"])
    assert "org_level_5_code" in drift["added"]
    assert "_2014_15_actuals" in drift["removed"]
    assert drift["rows"] == {"before": 1161, "release": 1757, "after": 1161 + 1757}
    assert any("org_level_5_code" in w for w in result.data["warnings"])
    assert [e.type for e in result.events] == ["table.loaded", "dataset.drifted"]


def test_an_alias_renames_by_declaration(tables):
    contract = {"columns": {"department_name": {"aliases": ["Dept Name"]}}}
    ok(run(tables, table="gf", key="raw/general_fund_revenue_fy2017-18.csv", all_varchar=True, contract=contract))
    result = ok(run(tables, table="gf", key="raw/general_fund_revenue_fy2021-22.csv", mode="append", contract=contract))
    renamed = {r["to"]: r for r in result.data["drift"]["renamed"]}
    assert renamed["department_name"] == {"from": "Dept Name", "to": "department_name", "by": "alias"}


def test_a_typo_in_a_header_is_a_guessed_rename(tables):
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q1.csv"))
    result = ok(run(tables, table="spend", key="raw/oxford_spend_2015_q2.csv", mode="append"))
    renamed = {r["to"]: r for r in result.data["drift"]["renamed"]}
    assert renamed["organisational_unit"]["from"] == "Organisatonal Unit"
    assert renamed["organisational_unit"]["by"] == "position+similarity"


def test_c1_control_characters_get_a_warning_naming_lines_and_cp1252(tables):
    result = ok(run(tables, table="cp", key="raw/oxford_spend_2014_q3_cp1252.csv", encoding="latin-1"))
    warning = next(w for w in result.data["warnings"] if "C1" in w)
    assert "lines [3]" in warning
    assert "cp1252" in warning


def test_a_spreadsheet_loads_through_the_excel_reader_with_the_same_rules(tables, storage, warehouse, tmp_path):
    # The Oxford release's first rows, saved as a workbook by DuckDB's own excel writer.
    book = tmp_path / "spend.xlsx"
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as con:
        load_extension(con, "excel", tmp_path / "ext")
        csv = DATA / "oxford_spend_2014_q3.csv"
        con.execute(f"COPY (SELECT * FROM read_csv('{csv}', all_varchar = true) LIMIT 10) TO '{book}' "
                    "(FORMAT xlsx, HEADER true, SHEET 'Q3')")
    storage.put_file("raw/spend.xlsx", book)
    result = ok(run(tables, table="sheet", key="raw/spend.xlsx", sheet="Q3", date_formats=DATE_FORMAT))
    types = {c["name"]: c["type"] for c in result.data["columns"]}
    assert types["paid_date"] == "DATE"
    assert result.data["rows"] == 10
    assert result.data["format"] == "xlsx"


def test_a_spreadsheet_given_as_csv_is_refused_clearly(tables, storage):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
    storage.put_bytes("raw/budget.xlsx", buffer.getvalue())
    result = run(tables, table="x", key="raw/budget.xlsx", format="csv")
    assert result.error.type == "InvalidCommand"
    assert "is a spreadsheet, xlsx" in result.error.message
    assert "format: xlsx" in result.error.message


def test_a_blank_header_gets_a_stable_name_in_the_rename_report(tables, storage):
    storage.put_bytes("raw/blank.csv", b"Code,,Name\n1,x,a\n")
    result = ok(run(tables, table="b", key="raw/blank.csv"))
    assert [c["name"] for c in result.data["columns"]] == ["code", "column_2", "name"]
    assert result.data["renamed"]["(blank header, column 2)"] == "column_2"


def test_upsert_updates_by_key_and_rejects_repeated_keys(tables, storage, warehouse):
    ok(run(tables, table="spend", key="raw/oxford_spend_2014_q1.csv", unique_key=["trans_no"], mode="upsert"))
    storage.put_bytes("raw/fix.csv", b"Trans No,Amount\n46279931_1,501.00\n46279931_1,502.00\nnew_1,7.00\n")
    result = ok(run(tables, table="spend", key="raw/fix.csv", unique_key=["trans_no"], mode="upsert"))
    assert (result.data["inserted"], result.data["updated"]) == (1, 1)
    assert result.data["validation"]["counts"] == {"unique": 1}
    assert fetch(warehouse, "SELECT CAST(amount AS VARCHAR) FROM spend WHERE trans_no = '46279931_1'") == [("501.00",)]


def test_contract_constraints_reject_with_reasons(tables):
    contract = {
        "columns": {
            "expenditure_code": {"pattern": "[A-Z][0-9]{3,6}"},
            "caporrev": {"allowed": ["Capital"]},
            "body_name": {"nullable": False},
        },
    }
    result = ok(run(tables, table="spend", key="raw/oxford_spend_2014_q1.csv", contract=contract))
    counts = result.data["validation"]["by_column"]
    assert counts["caporrev"]["allowed"] >= 1
    assert counts["body_name"] == {"not-null": 1}


def test_duckdb_is_not_in_the_message_of_an_unreadable_file(tables, storage):
    storage.put_bytes("raw/bad.json", b"{not json")
    result = run(tables, table="j", key="raw/bad.json")
    assert result.error.type == "InvalidCommand"
    assert "cannot read" in result.error.message
    assert "pudato-csv-" not in result.error.message


@pytest.mark.parametrize("name", ["general_fund_revenue_fy2021-22.csv", "oxford_spend_2014_q1.csv"])
def test_a_query_in_place_reads_a_csv_as_a_load_does(tables, settings, storage, name):
    from pudato.handlers.query import QueryHandler

    loaded = ok(run(tables, table="loaded", key=f"raw/{name}"))
    query = QueryHandler(settings, storage, DuckDBWarehouse.from_settings(settings))
    result = query.execute(Command(handler="query", action="run", job_id="job-1", payload={
        "sql": "SELECT * FROM release", "sources": {"release": {"key": f"raw/{name}"}}, "limit": 5000,
    }))
    assert result.status == "succeeded", result.error
    assert result.data["columns"] == [{"name": c["name"], "type": c["type"]} for c in loaded.data["columns"]]
    assert result.data["row_count"] == loaded.data["rows"]


QUERY_CONTRACT = """
name: spend_q1
columns:
  paid_date: {type: date, format: "%d/%m/%Y"}
  amount: {type: "decimal(12,2)"}
  unit: {aliases: [organisational_unit]}
  expenditure_code: {pattern: "[A-Z][0-9]{4}"}
"""


def _logic_repo(root: Path, files: dict[str, str]) -> str:
    git = ["git", "-C", str(root), "-c", "user.name=Analyst", "-c", "user.email=analyst@example.org"]
    root.mkdir()
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "contract"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


# A key that repeats in the release: a load rejects every repeat after the first as 'unique'.
KEYED_CONTRACT = QUERY_CONTRACT.replace("name: spend_q1", "name: spend_q1\nkey: [expenditure_code]")


@pytest.mark.parametrize(("contract", "counts"), [("spend_q1", {"pattern": 1}),
                                                   ("spend_keyed", {"pattern": 1, "unique": 30})])
def test_a_query_in_place_with_a_contract_reads_a_csv_as_a_contracted_load_does(
    tables, settings, storage, tmp_path, contract, counts
):
    from pudato.backends.logic.git import GitLogicRepository
    from pudato.handlers.query import QueryHandler

    repo = tmp_path / "logic"
    sha = _logic_repo(repo, {"datasets/spend_q1.yml": QUERY_CONTRACT, "datasets/spend_keyed.yml": KEYED_CONTRACT})
    tables._logic = GitLogicRepository(tmp_path / "cache")
    pinned = {"logic_repo": str(repo), "logic_version": sha, "job_id": "job-1"}
    loaded = tables.execute(Command(handler="table", action="load", **pinned, payload={
        "table": "spend", "key": "raw/oxford_spend_2014_q1.csv", "contract": contract}))
    ok(loaded)
    query = QueryHandler(settings, storage, DuckDBWarehouse.from_settings(settings))
    query._logic = tables._logic
    result = query.execute(Command(handler="query", action="run", **pinned, payload={
        "sql": "SELECT * FROM release", "limit": 5000,
        "sources": {"release": {"key": "raw/oxford_spend_2014_q1.csv", "contract": contract, "encoding": "utf-8"}},
    }))
    assert result.status == "succeeded", result.error
    assert result.data["columns"] == [{"name": c["name"], "type": c["type"]} for c in loaded.data["columns"]]
    assert result.data["row_count"] == loaded.data["rows"]
    assert loaded.data["validation"]["counts"] == counts


def test_a_query_source_contract_needs_a_pinned_commit(settings, storage):
    from pudato.handlers.query import QueryHandler

    query = QueryHandler(settings, storage, DuckDBWarehouse.from_settings(settings))
    result = query.execute(Command(handler="query", action="run", job_id="job-1", payload={
        "sql": "SELECT * FROM r", "sources": {"r": {"key": "raw/oxford_spend_2014_q1.csv", "contract": "spend_q1"}},
    }))
    assert result.error.type == "InvalidCommand"
    assert "job's commit" in result.error.message


def test_a_query_in_place_names_a_blank_header_as_a_load_does(tables, settings, storage):
    from pudato.handlers.query import QueryHandler

    storage.put_bytes("raw/blank.csv", b"Code,,Name\n1,x,a\n")
    loaded = ok(run(tables, table="b", key="raw/blank.csv"))
    query = QueryHandler(settings, storage, DuckDBWarehouse.from_settings(settings))
    result = query.execute(Command(handler="query", action="run", job_id="job-1", payload={
        "sql": "SELECT * FROM f", "sources": {"f": {"key": "raw/blank.csv"}},
    }))
    assert result.status == "succeeded", result.error
    assert [c["name"] for c in result.data["columns"]] == [c["name"] for c in loaded.data["columns"]]


def test_a_replace_reports_a_column_whose_values_changed_type(tables, storage):
    storage.put_bytes("raw/a.csv", b"id,amount\n1,10\n")
    storage.put_bytes("raw/b.csv", b"id,amount\n1,10.50\n")
    ok(run(tables, table="r", key="raw/a.csv"))
    result = ok(run(tables, table="r", key="raw/b.csv"))
    assert result.data["drift"]["retyped"] == [{"column": "amount", "from": "BIGINT", "to": "DECIMAL(18,2)"}]
    refused = run(tables, table="r", key="raw/a.csv", contract={"policies": {"retyped": "fail"}})
    assert refused.error.type == "DriftRefused"


def test_a_record_longer_than_the_header_keeps_its_extra_field(tables, storage, warehouse):
    rows = (DATA / "la_gf_revenue_short_record.csv").read_text().splitlines()
    storage.put_bytes("raw/long.csv", "\n".join([*rows[:3], rows[3] + ",a stray note", *rows[4:6]]).encode() + b"\n")
    result = ok(run(tables, table="long", key="raw/long.csv"))
    validation = result.data["validation"]
    assert validation["long_records"] == {"count": 1, "rows": [3]}
    assert validation["short_records"]["count"] == 0
    assert fetch(warehouse, "SELECT column_14 FROM long WHERE column_14 IS NOT NULL") == [("a stray note",)]


def test_a_key_naming_a_missing_column_is_refused(tables):
    result = run(tables, table="k", key="raw/oxford_spend_2014_q1.csv", unique_key=["transaction"], mode="upsert")
    assert result.error.type == "InvalidCommand"
    assert "['transaction']" in result.error.message


def test_an_append_reports_a_column_whose_values_no_longer_fit_and_keeps_them(tables, warehouse):
    ok(run(tables, table="ox", key="raw/oxford_spend_2014_q1.csv", date_formats=DATE_FORMAT))
    result = ok(run(tables, table="ox", key="raw/oxford_spend_2014_q2.csv", mode="append", date_formats=DATE_FORMAT))
    assert result.data["drift"]["retyped"] == [{"column": "paid_date", "from": "DATE", "to": "VARCHAR"}]
    assert result.data["validation"]["counts"] == {"type": 20}
    assert fetch(warehouse, "SELECT count(*) FROM ox__rejected") == [(20,)]


def test_an_append_of_narrower_values_is_no_retype(tables):
    ok(run(tables, table="ox", key="raw/oxford_spend_2014_q1.csv", date_formats=DATE_FORMAT,
           types={"amount": "DECIMAL(12,2)"}))
    result = ok(run(tables, table="ox", key="raw/oxford_spend_2014_q3.csv", mode="append", date_formats=DATE_FORMAT))
    assert result.data["drift"]["retyped"] == []


def test_an_append_whose_values_changed_type_fails_on_a_fail_policy_and_writes_nothing(tables, warehouse):
    ok(run(tables, table="ox", key="raw/oxford_spend_2014_q1.csv", date_formats=DATE_FORMAT))
    before = fetch(warehouse, "SELECT count(*) FROM ox")
    refused = run(tables, table="ox", key="raw/oxford_spend_2014_q2.csv", mode="append", date_formats=DATE_FORMAT,
                  contract={"policies": {"retyped": "fail"}})
    assert refused.error.type == "DriftRefused"
    assert fetch(warehouse, "SELECT count(*) FROM ox") == before


def test_a_rejected_row_keeps_its_record_number_and_its_line_in_the_file(tables, warehouse):
    ok(run(tables, table="q1", key="raw/oxford_spend_2014_q1.csv",
           contract={"columns": {"expenditure_code": {"pattern": "[A-Z][0-9]{4}"}}}))
    lines = (DATA / "oxford_spend_2014_q1.csv").read_text().splitlines()
    broken = [n for n, text in enumerate(lines, start=1) if ",Z400404," in text]
    kept = fetch(warehouse, 'SELECT "row", "line" FROM q1__rejected ORDER BY "row"')
    assert kept == [(n - 1, n) for n in broken]


def test_a_wrong_utf8_names_the_line_and_column_of_the_first_bad_byte(tables):
    result = run(tables, table="cp", key="raw/oxford_spend_2014_q3_cp1252.csv", encoding="utf-8")
    assert result.error.type == "InvalidCommand"
    assert "(line 3, column 'Supplier Name')" in result.error.message
    assert result.error.details["line"] == 3
    assert result.error.details["column"] == "Supplier Name"


def test_a_wrong_explicit_encoding_names_the_byte_line_and_column_in_the_file(tables):
    result = run(tables, table="cp", key="raw/oxford_spend_2014_q3_cp1252.csv", encoding="ascii")
    assert result.error.type == "InvalidCommand"
    assert "at byte 433 (line 3, column 'Supplier Name')" in result.error.message
    assert result.error.details["line"] == 3


def test_unreadable_json_lines_name_the_bad_line(tables, storage):
    storage.put_bytes("raw/bad.jsonl", b'{"a": 1}\n{"a": 2}\n{not json\n{"a": 3}\n')
    result = run(tables, table="j", key="raw/bad.jsonl")
    assert result.error.type == "InvalidCommand"
    assert "(line 3)" in result.error.message
    assert result.error.details["line"] == 3


def test_duckdbs_csv_line_number_is_kept_as_ours():
    from pudato.backends.warehouse.read_errors import read_error
    from pudato.errors import PudatoError

    duckdb_error = PudatoError("DuckDB InvalidInputException: Invalid Input Error: CSV Error on Line: 31\nOriginal...")
    error = read_error(duckdb_error, "csv", "/tmp/x.csv", "s3://b/spend.csv")
    assert error.details["line"] == 31
    assert "CSV Error on Line: 31" in error.message


def test_a_quarantine_table_from_before_lines_were_kept_gains_the_line_column(tables, warehouse):
    with warehouse.connect() as con:
        con.execute('CREATE TABLE q1__rejected (source VARCHAR, source_version VARCHAR, "row" BIGINT, '
                    "reasons VARCHAR, record VARCHAR, job_id VARCHAR, loaded_at TIMESTAMP)")
    ok(run(tables, table="q1", key="raw/oxford_spend_2014_q1.csv",
           contract={"columns": {"expenditure_code": {"pattern": "[A-Z][0-9]{4}"}}}))
    assert fetch(warehouse, 'SELECT "row" + 1 = "line" FROM q1__rejected') == [(True,)]


def test_a_typed_append_the_table_takes_without_loss_is_no_retype(tables, storage, tmp_path):
    for name, sql in {"wide": "SELECT 1::BIGINT AS id, 2.50::DECIMAL(12,2) AS amount",
                      "narrow": "SELECT 2::INTEGER AS id, 3.5::DECIMAL(4,1) AS amount",
                      "text": "SELECT 'x' AS id, 1.0::DECIMAL(4,1) AS amount"}.items():
        duckdb.sql(f"COPY ({sql}) TO '{tmp_path / name}.parquet' (FORMAT parquet)")
        storage.put_file(f"raw/{name}.parquet", tmp_path / f"{name}.parquet")
    ok(run(tables, table="typed", key="raw/wide.parquet"))
    assert ok(run(tables, table="typed", key="raw/narrow.parquet", mode="append")).data["drift"]["retyped"] == []
    changed = ok(run(tables, table="typed", key="raw/text.parquet", mode="append")).data["drift"]["retyped"]
    assert changed == [{"column": "id", "from": "BIGINT", "to": "VARCHAR"}]
