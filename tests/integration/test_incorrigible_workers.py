"""Messy releases through real workers: a contract from the logic repository, drift, rejects, refusals.

A logic repository holds ``datasets/oxford_spend.yml`` and three pipelines. The
first appends real quarterly releases of Oxford City Council's spending into one
lake table under a contract that declares date and money types, null tokens,
separators and currency, an alias, a key, a pattern and ``max_rejected``: dates
parse by the contract's format in every release; a release whose dates are
``00:00:00`` has those rows rejected and kept in the quarantine table (with the
S3 version and line), and its column reported retyped; a code that breaks the
pattern and keys already loaded are rejected too; the header changes between
releases are reported, in the Result, on SNS (``dataset.drifted``) and by
``pudato datasets drift``. The second pipeline's contract says ``fail`` to added
columns, the third's allows no rejected row: each load fails with its report and
writes nothing. The registry keeps every release's drift.

``ox/printed.csv`` is made here, not fetched: the first three records of
``oxford_spend_2015_q2.csv`` with their amounts printed as a spreadsheet shows
them (``£``, thousands separators, a refund in parentheses) and two supplier ids
written ``N/A`` and ``-``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import git, subscribed_queue

from pudato import jobs, pipelines
from pudato.backends.warehouse import parse_table_name, warehouse_backend
from pudato.registry.drift import drift_history

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "incorrigible"
BUCKET = "pudato-test"
CONTRACT = """
name: oxford_spend
key: [trans_no]
null_tokens: ["", "N/A", "-"]
thousands: ","
currency: ["£"]
negative_parentheses: true
columns:
  paid_date: {type: date, format: "%d/%m/%Y"}
  amount: {type: "decimal(12,2)"}
  organisational_unit: {aliases: ["Organisatonal Unit"]}
  expenditure_code: {pattern: "[A-Z][0-9]{4}"}
policies: {added: {added}, removed: warn, renamed: warn, retyped: {retyped}}
max_rejected: {max_rejected}
"""
PIPELINE = """
name: {name}
steps:
  - {{name: q3, handler: table, action: load,
     payload: {{table: {table}, key: ox/q3.csv, contract: {contract}}}}}
  - {{name: q1, handler: table, action: load,
     payload: {{table: {table}, key: ox/q1.csv, mode: append, contract: {contract}}}}}
  - {{name: q2, handler: table, action: load,
     payload: {{table: {table}, key: ox/q2.csv, mode: append, contract: {contract}}}}}
  - {{name: printed, handler: table, action: load,
     payload: {{table: {table}, key: ox/printed.csv, mode: append, contract: {contract}}}}}
  - {{name: q2015, handler: table, action: load,
     payload: {{table: {table}, key: ox/2015.csv, mode: append, contract: {contract}}}}}
"""
STRICT = """
name: oxford_strict
steps:
  - {name: base, handler: table, action: load, payload: {table: ox_strict, key: ox/q3.csv, contract: oxford_strict}}
  - {name: newer, handler: table, action: load,
     payload: {table: ox_strict, key: ox/2018.csv, mode: append, contract: oxford_strict}}
"""
LIMITED = """
name: oxford_limited
steps:
  - {name: q1, handler: table, action: load, payload: {table: ox_limited, key: ox/q1.csv, contract: oxford_limited}}
"""
PRINTED_AMOUNTS = {"1054.11": '"£1,054.11"', "1255.18": "(£1255.18)", "8310.6": '"£8,310.60"'}


def _contract(name: str, added: str, retyped: str, max_rejected: str) -> str:
    return (CONTRACT.replace("oxford_spend", name).replace("{added}", added).replace("{retyped}", retyped)
            .replace("{max_rejected}", max_rejected))


def _printed() -> bytes:
    header, *records = (DATA / "oxford_spend_2015_q2.csv").read_bytes().decode().split("\r\n")[:4]
    printed = []
    for record, supplier in zip(records, ["20000000_46285340", "N/A", "-"], strict=True):
        fields = record.split(",")
        fields[6], fields[8] = PRINTED_AMOUNTS[fields[6]], supplier
        printed.append(",".join(fields))
    return "\r\n".join([header, *printed, ""]).encode()


@pytest.fixture(scope="module")
def logic(stack, tmp_path_factory) -> str:
    repo = tmp_path_factory.mktemp("logic") / "spend"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    files = {
        "datasets/oxford_spend.yml": _contract("oxford_spend", "evolve", "warn", "20"),
        "datasets/oxford_strict.yml": _contract("oxford_strict", "fail", "fail", "20"),
        "datasets/oxford_limited.yml": _contract("oxford_limited", "evolve", "warn", "0"),
        "pipelines/oxford.yml": PIPELINE.format(name="oxford", table="ox_spend", contract="oxford_spend"),
        "pipelines/oxford_strict.yml": STRICT,
        "pipelines/oxford_limited.yml": LIMITED,
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "contracts and pipelines")
    s3 = stack.client("s3")
    for key, name in {"q1": "oxford_spend_2014_q1.csv", "q2": "oxford_spend_2014_q2.csv",
                      "q3": "oxford_spend_2014_q3.csv", "2018": "oxford_spend_2018_q1.csv",
                      "2015": "oxford_spend_2015_q2.csv"}.items():
        s3.put_object(Bucket=BUCKET, Key=f"ox/{key}.csv", Body=(DATA / name).read_bytes())
    s3.put_object(Bucket=BUCKET, Key="ox/printed.csv", Body=_printed())
    return str(repo)




def _events_of(stack, url: str, job_id: str, kind: str, count: int, timeout_s: float = 60.0) -> list[dict]:
    """The job's events of one kind, read from ``url`` until ``count`` arrived or the deadline passed."""
    sqs, found, deadline = stack.client("sqs"), [], time.monotonic() + timeout_s
    while len(found) < count and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(message["Body"])
            if body.get("job_id") == job_id and body.get("type") == kind:
                found.append(body)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def _step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s["name"] == name)


def _rows(stack, sql: str) -> list[tuple]:
    with warehouse_backend(stack.settings()).session(read_only=True) as session:
        return session.rows(sql)


def test_releases_append_with_the_contracts_types_and_rejects_are_kept(stack, logic):
    events = subscribed_queue(stack, "pudato-events", "test-incorrigible-events")
    job = jobs.wait(pipelines.submit("oxford", logic, "main").job_id, timeout=300)
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"]]
    q2 = _step(job, "q2")["data"]
    assert q2["validation"]["counts"] == {"type": 20}
    assert q2["validation"]["errors"][0]["value"] == "00:00:00"
    assert q2["drift"]["retyped"] == [{"column": "paid_date", "from": "DATE", "to": "VARCHAR"}]
    assert q2["contract"]["path"] == "datasets/oxford_spend.yml"
    assert _rows(stack, "SELECT DISTINCT typeof(paid_date) FROM ox_spend") == [("DATE",)]
    # q3 40, q1 42 of 43 (a pattern reject), q2 none of 20, printed 3, 2015 17 of 20 (3 keys already loaded).
    assert _rows(stack, "SELECT count(*) FROM ox_spend") == [(40 + 42 + 3 + 17,)]
    assert _rows(stack, "SELECT reasons, count(*) FROM ox_spend__rejected GROUP BY reasons ORDER BY reasons") == [
        ("expenditure_code: pattern", 1), ("paid_date: type", 20), ("trans_no: unique", 3)]
    assert q2["validation"]["rejected_table"] == "main.ox_spend__rejected"
    version = stack.client("s3").head_object(Bucket=BUCKET, Key="ox/q2.csv")["VersionId"]
    of_q2 = "FROM ox_spend__rejected WHERE source LIKE '%/ox/q2.csv'"
    assert _rows(stack, f"SELECT DISTINCT source_version {of_q2}") == [(version,)]
    lines = (DATA / "oxford_spend_2014_q2.csv").read_text().splitlines()
    undated = [(n,) for n, text in enumerate(lines, start=1) if ",00:00:00," in text]
    assert _rows(stack, f'SELECT "line" {of_q2} ORDER BY "line"') == undated
    q1 = _step(job, "q1")["data"]
    assert q1["drift"]["added"] == ["caporrev"]
    assert q1["drift"]["removed"] == ["type"]
    assert q1["validation"]["counts"] == {"pattern": 1}
    assert {k: q1["validation"]["errors"][0][k] for k in ("column", "value", "reason")} == {
        "column": "expenditure_code", "value": "Z400404", "reason": "pattern"}
    _assert_printed_amounts_and_keys(stack, job)
    drifted = _events_of(stack, events, job["id"], "dataset.drifted", count=4)
    retypes = [e["detail"]["retyped"] for e in drifted if e["detail"]["retyped"]]
    assert retypes == [[{"column": "paid_date", "from": "DATE", "to": "VARCHAR"}]]
    _assert_the_cli_shows_the_drift(stack)


def _assert_printed_amounts_and_keys(stack, job: dict) -> None:
    """Null tokens, separators, currency and parentheses parse; the alias pairs the typo; the key rejects repeats."""
    printed = _step(job, "printed")["data"]
    assert printed["drift"]["renamed"] == [{"from": "Organisatonal Unit", "to": "organisational_unit", "by": "alias"}]
    assert printed["validation"]["rejected"] == 0
    rows = _rows(stack, "SELECT trans_no, CAST(amount AS VARCHAR), supplier_id, organisational_unit FROM ox_spend "
                        "WHERE trans_no IN ('46285340_1', '46285341_1', '46285354_1') ORDER BY trans_no")
    assert rows == [("46285340_1", "1054.11", "20000000_46285340", "Financial Services"),
                    ("46285341_1", "-1255.18", None, "Financial Services"),
                    ("46285354_1", "8310.60", None, "Housing and Property")]
    assert _step(job, "q2015")["data"]["validation"]["counts"] == {"unique": 3}


def _assert_the_cli_shows_the_drift(stack) -> None:
    """``pudato datasets drift`` reads the stack's PostgreSQL registry."""
    command = [str(Path(sys.executable).with_name("pudato")), "datasets", "drift", "main.ox_spend"]
    shown = subprocess.run(command, env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "retyped: paid_date DATE -> VARCHAR" in shown.stdout
    assert "renamed: Organisatonal Unit -> organisational_unit (by alias)" in shown.stdout
    assert "rows 82 -> 82 (release 20), rejected 20" in shown.stdout


def test_a_fail_policy_fails_the_step_with_the_report_and_writes_nothing(stack, logic):
    job = jobs.wait(pipelines.submit("oxford_strict", logic, "main").job_id, timeout=240)
    assert job["status"] == "failed"
    newer = _step(job, "newer")
    assert newer["error"]["type"] == "DriftRefused"
    assert "client" in newer["error"]["details"]["drift"]["added"]
    assert _rows(stack, "SELECT count(*) FROM ox_strict") == [(40,)]
    history = drift_history(stack.env["PUDATO_REGISTRY__URL"], "main.ox_strict")
    assert [(h["status"], h["drifted"]) for h in history][-2:] == [("succeeded", False), ("failed", True)]


def test_a_workbook_loads_into_the_lake_through_the_excel_reader(stack, tmp_path):
    import duckdb

    from pudato.backends.warehouse.engine import load_extension

    book = tmp_path / "spend.xlsx"
    with duckdb.connect(config={"autoinstall_known_extensions": False}) as con:
        load_extension(con, "excel", tmp_path / "ext")
        con.execute(f"COPY (SELECT * FROM read_csv('{DATA / 'oxford_spend_2014_q3.csv'}', all_varchar = true)) "
                    f"TO '{book}' (FORMAT xlsx, HEADER true)")
    stack.client("s3").put_object(Bucket=BUCKET, Key="ox/spend.xlsx", Body=book.read_bytes())
    step = jobs.step("table", "load", table="ox_sheet", key="ox/spend.xlsx",
                     date_formats={"paid_date": "%d/%m/%Y"})
    job = jobs.wait(jobs.submit(step).job_id, timeout=120)
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"]]
    data = job["steps"][0]["data"]
    assert data["format"] == "xlsx"
    assert data["rows"] == 40
    assert _rows(stack, "SELECT DISTINCT typeof(paid_date) FROM ox_sheet") == [("DATE",)]


def test_more_rejected_rows_than_max_rejected_fails_the_step_and_writes_nothing(stack, logic):
    job = jobs.wait(pipelines.submit("oxford_limited", logic, "main").job_id, timeout=240)
    assert job["status"] == "failed"
    error = _step(job, "q1")["error"]
    assert error["type"] == "InvalidCommand"
    assert "over max_rejected" in error["message"]
    assert error["details"]["validation"]["counts"] == {"pattern": 1}
    with warehouse_backend(stack.settings()).session(read_only=True) as session:
        assert session.find(parse_table_name("ox_limited")) is None
