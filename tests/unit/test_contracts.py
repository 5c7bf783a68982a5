"""Contracts: parsed from YAML, read from the logic repository at a pinned commit; drift matching on its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pudato.backends.logic.git import GitLogicRepository
from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.contracts.drift import match_columns
from pudato.contracts.model import ColumnContract, Parsing, merge_options, rejection_limit
from pudato.contracts.reading import parse_contract
from pudato.errors import InvalidCommand
from pudato.handlers.csv_options import normalize_name, normalize_names
from pudato.handlers.table import TableHandler
from pudato.protocol import Command
from pudato.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "incorrigible"

CONTRACT = """
name: oxford_spend
key: [trans_no]
null_tokens: ["", "N/A"]
columns:
  paid_date: {type: date, format: "%d/%m/%Y"}
  amount: {type: "decimal(12,2)"}
  organisational_unit: {aliases: [Service Area]}
policies: {added: evolve, removed: warn, renamed: warn, retyped: fail}
max_rejected: 5%
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "contract")
    return _git(repo, "rev-parse", "HEAD")


def test_a_contract_parses_with_its_policies_and_limit():
    contract = parse_contract(CONTRACT, "oxford_spend", "datasets/oxford_spend.yml")
    assert contract.columns["amount"].type == "decimal(12,2)"
    assert contract.policies.retyped == "fail"
    assert rejection_limit(contract.max_rejected or 0, 200) == 10


def test_a_bad_contract_names_the_file_and_the_field():
    with pytest.raises(InvalidCommand) as caught:
        parse_contract("columns: {a: {type: 'int; drop table x'}}", "x", "datasets/x.yml")
    assert "datasets/x.yml" in caught.value.message
    assert "columns.a" in caught.value.message or "column 'a'" in caught.value.message


def test_the_payload_wins_over_the_contract():
    contract = parse_contract(CONTRACT, "oxford_spend", "datasets/oxford_spend.yml")
    rules = merge_options(contract, Parsing(null_tokens=["-"]), {"amount": "decimal(14,2)"}, {}, None)
    assert rules.text.null_tokens == ("-",)
    assert rules.types["amount"] == "decimal(14,2)"
    assert rules.formats["paid_date"] == "%d/%m/%Y"
    assert rules.key == ["trans_no"]


@pytest.mark.parametrize(("given", "rows", "limit"), [(10, 1000, 10), (0.05, 1000, 50), ("5%", 1000, 50), ("0", 9, 0)])
def test_rejection_limits(given, rows, limit):
    assert rejection_limit(given, rows) == limit


def test_match_by_alias_then_similarity_and_report_the_rest():
    headers = ["Service Area", "Expenditure Catergory", "Paid Date", "Client"]
    expected = ["organisational_unit", "expenditure_category", "paid_date", "body_name"]
    columns = {"organisational_unit": ColumnContract(aliases=["Service Area"])}
    matches, drift = match_columns(headers, normalize_names(headers), expected, columns, normalize_name)
    assert [(m.header, m.column) for m in matches][:3] == [
        ("Service Area", "organisational_unit"),
        ("Expenditure Catergory", "expenditure_category"),
        ("Paid Date", "paid_date"),
    ]
    assert [r["by"] for r in drift.renamed] == ["alias", "position+similarity"]
    assert drift.added == ["client"]
    assert drift.removed == ["body_name"]


def test_names_that_differ_in_their_numbers_are_never_renames():
    headers = ["2019-20 Actuals"]
    _, drift = match_columns(headers, normalize_names(headers), ["_2014_15_actuals"], {}, normalize_name)
    assert drift.renamed == []
    assert drift.added == ["_2019_20_actuals"]


def test_the_contract_is_read_at_the_pinned_commit(tmp_path):
    origin = tmp_path / "logic"
    origin.mkdir()
    _git(origin, "init", "-q", "-b", "main")
    _git(origin, "config", "user.email", "analyst@example.org")
    _git(origin, "config", "user.name", "Analyst")
    pinned = _commit(origin, {"datasets/oxford_spend.yml": CONTRACT})
    _commit(origin, {"datasets/oxford_spend.yml": CONTRACT.replace("decimal(12,2)", "varchar")})
    settings = Settings(
        _env_file=None,
        storage={"backend": "local", "local_root": tmp_path / "objects"},
        warehouse={"path": tmp_path / "w.duckdb"},
        logic={"cache_dir": tmp_path / "cache"},
    )
    storage = LocalStorage(settings.storage.local_root)
    storage.put_file("raw/q1.csv", DATA / "oxford_spend_2014_q1.csv")
    handler = TableHandler(settings, storage, DuckDBWarehouse.from_settings(settings))
    handler._logic = GitLogicRepository(tmp_path / "cache")
    command = Command(
        handler="table", action="load", logic_repo=str(origin), logic_version=pinned,
        payload={"table": "spend", "key": "raw/q1.csv", "contract": "oxford_spend"},
    )
    result = handler.execute(command)
    assert result.status == "succeeded", result.error
    types = {c["name"]: c["type"] for c in result.data["columns"]}
    assert types["amount"] == "DECIMAL(12,2)"
    assert types["paid_date"] == "DATE"
    assert result.data["contract"] == {
        "contract": "oxford_spend", "path": "datasets/oxford_spend.yml", "logic_version": pinned,
    }


def test_a_named_contract_without_a_pinned_commit_is_refused(tmp_path):
    settings = Settings(
        _env_file=None,
        storage={"backend": "local", "local_root": tmp_path / "objects"},
        warehouse={"path": tmp_path / "w.duckdb"},
    )
    storage = LocalStorage(settings.storage.local_root)
    storage.put_file("raw/q1.csv", DATA / "oxford_spend_2014_q1.csv")
    handler = TableHandler(settings, storage, DuckDBWarehouse.from_settings(settings))
    result = handler.execute(
        Command(handler="table", action="load", payload={"table": "s", "key": "raw/q1.csv", "contract": "x"})
    )
    assert result.error.type == "InvalidCommand"
    assert "logic repository" in result.error.message


def test_an_old_excel_workbook_is_named_with_its_fix(tmp_path):
    from pudato.handlers.csv_options import not_a_spreadsheet

    book = tmp_path / "budget.xls"
    book.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504)
    with pytest.raises(InvalidCommand) as caught:
        not_a_spreadsheet(book, "csv", "s3://b/budget.xls")
    assert caught.value.message == (
        "s3://b/budget.xls is a spreadsheet, xls (an OLE2 document), not csv: "
        "save it as xlsx or export the sheet as CSV"
    )


def test_c1_lines_are_found_in_latin1_text_that_was_cp1252(tmp_path):
    from pudato.handlers.csv_options import c1_lines

    decoded = (DATA / "oxford_spend_2014_q3_cp1252.csv").read_bytes().decode("latin-1")
    text = tmp_path / "as_latin1.csv"
    text.write_text(decoded, encoding="utf-8")
    assert c1_lines(text) == [3]


def test_a_validation_report_counts_explains_and_enforces_its_limit():
    from pudato.contracts.model import ColumnRead
    from pudato.contracts.validation import ValidationReport

    paid = ColumnRead("paid_date", "Paid Date", "DATE", "%d/%m/%Y")
    report = ValidationReport(rows=20, rejected=2)
    report.count("paid_date", "type", 2)
    report.add(paid, 1, "00:00:00", "type")
    assert report.errors[0]["expected"] == "DATE in format %d/%m/%Y"
    assert report.errors[0]["fix"].startswith("date_formats: {paid_date:")
    report.enforce("10%", "s3://b/q2.csv")  # 2 of 20 is within 10%
    with pytest.raises(InvalidCommand) as caught:
        report.enforce(1, "s3://b/q2.csv", name="main.spend")
    assert caught.value.details["validation"]["counts"] == {"type": 2}
    assert caught.value.details["name"] == "main.spend"


def test_the_readme_example_and_the_sample_contract_parse():
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    example = readme[readme.index("# datasets/oxford_spend.yml"):]
    example = example[: example.index("```")]
    assert parse_contract(example, "oxford_spend", "README").columns["paid_date"].format == "%d/%m/%Y"
    sample = (root / "dbt" / "datasets" / "la_gf_revenue.yml").read_text()
    assert parse_contract(sample, "la_gf_revenue", "dbt").columns["department_name"].aliases == ["Dept Name"]
