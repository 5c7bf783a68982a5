"""Messy releases through real workers: a contract from the logic repository, drift, rejects, refusals.

A logic repository holds ``datasets/oxford_spend.yml`` and two pipelines. The
first appends three real quarterly releases of Oxford City Council's spending
into one lake table: dates parse by the contract's format in every release, a
release whose dates are ``00:00:00`` has those rows rejected and kept in the
quarantine table, and the header changes between releases are reported. The
second pipeline's contract says ``fail`` to added columns: its load fails with
the drift report and writes nothing. The registry keeps every release's drift.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pudato import jobs, pipelines
from pudato.backends.warehouse import warehouse_backend
from pudato.registry.drift import drift_history

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "incorrigible"
BUCKET = "pudato-test"
CONTRACT = """
name: oxford_spend
columns:
  paid_date: {type: date, format: "%d/%m/%Y"}
  amount: {type: "decimal(12,2)"}
policies: {added: {added}, removed: warn, renamed: warn, retyped: {retyped}}
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
"""
STRICT = """
name: oxford_strict
steps:
  - {name: base, handler: table, action: load, payload: {table: ox_strict, key: ox/q3.csv, contract: oxford_strict}}
  - {name: newer, handler: table, action: load,
     payload: {table: ox_strict, key: ox/2018.csv, mode: append, contract: oxford_strict}}
"""


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=Analyst", "-c", "user.email=analyst@example.org", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def logic(stack, tmp_path_factory) -> str:
    repo = tmp_path_factory.mktemp("logic") / "spend"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    files = {
        "datasets/oxford_spend.yml": CONTRACT.replace("{added}", "evolve").replace("{retyped}", "warn"),
        "datasets/oxford_strict.yml": CONTRACT.replace("{added}", "fail").replace("{retyped}", "fail")
        .replace("oxford_spend", "oxford_strict"),
        "pipelines/oxford.yml": PIPELINE.format(name="oxford", table="ox_spend", contract="oxford_spend"),
        "pipelines/oxford_strict.yml": STRICT,
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "contracts and pipelines")
    s3 = stack.client("s3")
    for key, name in {"q1": "oxford_spend_2014_q1.csv", "q2": "oxford_spend_2014_q2.csv",
                      "q3": "oxford_spend_2014_q3.csv", "2018": "oxford_spend_2018_q1.csv"}.items():
        s3.put_object(Bucket=BUCKET, Key=f"ox/{key}.csv", Body=(DATA / name).read_bytes())
    return str(repo)


def _step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s["name"] == name)


def _rows(stack, sql: str) -> list[tuple]:
    with warehouse_backend(stack.settings()).session(read_only=True) as session:
        return session.rows(sql)


def test_releases_append_with_the_contracts_types_and_rejects_are_kept(stack, logic):
    job = jobs.wait(pipelines.submit("oxford", logic, "main").job_id, timeout=240)
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"]]
    q2 = _step(job, "q2")["data"]
    assert q2["validation"]["counts"] == {"type": 20}
    assert q2["validation"]["errors"][0]["value"] == "00:00:00"
    assert q2["drift"]["retyped"] == [{"column": "paid_date", "from": "DATE", "to": "VARCHAR"}]
    assert q2["contract"]["path"] == "datasets/oxford_spend.yml"
    assert _rows(stack, "SELECT DISTINCT typeof(paid_date) FROM ox_spend") == [("DATE",)]
    assert _rows(stack, "SELECT count(*) FROM ox_spend") == [(40 + 43,)]
    assert _rows(stack, "SELECT count(*), min(reasons) FROM ox_spend__rejected") == [(20, "paid_date: type")]
    assert q2["validation"]["rejected_table"] == "main.ox_spend__rejected"
    version = stack.client("s3").head_object(Bucket=BUCKET, Key="ox/q2.csv")["VersionId"]
    assert _rows(stack, "SELECT DISTINCT source_version FROM ox_spend__rejected") == [(version,)]
    lines = (DATA / "oxford_spend_2014_q2.csv").read_text().splitlines()
    undated = [(n,) for n, text in enumerate(lines, start=1) if ",00:00:00," in text]
    assert _rows(stack, 'SELECT "line" FROM ox_spend__rejected ORDER BY "line"') == undated
    q1 = _step(job, "q1")["data"]["drift"]
    assert q1["added"] == ["caporrev"]
    assert q1["removed"] == ["type"]


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
