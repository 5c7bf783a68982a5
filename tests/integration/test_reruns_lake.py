"""Exact reruns on the lake: S3 inputs by version id, lake tables (dbt sources included) at their snapshot.

A pipeline on a logic repository stores a lookup object, loads a table from an S3
object, queries it with a lake table that it did not write, and builds two dbt
models on both. After the first run the S3 object is overwritten and rows are
appended to the lake table. A plain rerun's output tables hash the same as the
first run's; ``--latest-data`` differs and records the new versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import commit
from helpers import git as _git

from pudato import devstack, jobs, pipelines
from pudato.backends.warehouse import warehouse_backend
from pudato.backends.warehouse.ducklake import ensure_catalog
from pudato.errors import VersionGone
from pudato.settings import Settings, reset_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

BUCKET = "pudato-test"
LAKE_HANDLERS = ("table", "query", "transform")
ORDERS = "id,region,amount\n1,n,10\n2,s,20\n3,n,5\n"
MORE_ORDERS = ORDERS + "4,s,40\n5,n,50\n"
REGIONS = "region,name\nn,North\ns,South\n"
PROJECT = "name: lr\nversion: '1.0.0'\nconfig-version: 2\nprofile: lr\nmodels:\n  lr:\n    +materialized: table\n"
SOURCES = ("version: 2\nsources:\n  - name: raw\n    schema: main\n    tables:\n"
           "      - name: lr_orders\n      - name: lr_regions\n")
ENRICHED = ("select o.id, o.amount, r.name from {{ source('raw', 'lr_orders') }} o "
            "join {{ source('raw', 'lr_regions') }} r using (region)\n")
TOTALS = "select name, sum(amount) as total, count(*) as n from {{ ref('lr_enriched') }} group by name\n"
PIPELINE = """\
name: lr
steps:
  - {name: rates, handler: storage, action: put, payload: {key: lr/rates.csv, content: "region,rate\\nn,1.5\\ns,2\\n"}}
  - {name: load, handler: table, action: load, payload: {table: lr_orders, key: lr/orders.csv}}
  - name: report
    handler: query
    action: run
    payload:
      sql: >-
        select g.name, sum(o.amount * r.rate) as weighted, count(*) as n from lr_orders o
        join lr_regions g using (region) join rates r using (region) group by all order by 1
      sources: {rates: {key: lr/rates.csv}}
  - {name: build, handler: transform, action: build, payload: {}}
"""
OUTPUTS = ("lr_orders", "lr_enriched", "lr_totals")


@pytest.fixture(scope="module")
def lake(stack, tmp_path_factory: pytest.TempPathFactory):
    """The session's stack with its table, query and transform workers on a DuckLake warehouse."""
    if stack.env.get("PUDATO_WAREHOUSE__BACKEND") == "ducklake":
        yield stack
        return
    state = tmp_path_factory.mktemp("lake")
    extra = {
        "PUDATO_WAREHOUSE__BACKEND": "ducklake",
        "PUDATO_WAREHOUSE__CATALOG_DATABASE": "pudato_lake_reruns",
        "PUDATO_WAREHOUSE__EXTENSION_DIR": str(state / "extensions"),
    }
    env = {**stack.env, **extra}
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    reset_settings()
    for handler in LAKE_HANDLERS:
        devstack.stop(stack.workers[handler])
    try:
        ensure_catalog(Settings(_env_file=None))
        with devstack.workers(env, handlers=LAKE_HANDLERS, log_dir=state / "logs", cwd=REPO) as started:
            yield type(stack)(env, stack.endpoint, stack.postgres, {**stack.workers, **started}, state)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        reset_settings()
        for handler in LAKE_HANDLERS:
            stack.workers[handler] = devstack.start_worker(handler, stack.env, log_dir=stack.state / "logs", cwd=REPO)
        for handler in LAKE_HANDLERS:
            devstack.wait_for_worker(stack.workers[handler], handler)


@pytest.fixture(scope="module")
def logic(lake, tmp_path_factory):
    repo = tmp_path_factory.mktemp("lake-logic") / "lr"
    files = {"dbt_project.yml": PROJECT, "models/sources.yml": SOURCES, "models/lr_enriched.sql": ENRICHED,
             "models/lr_totals.sql": TOTALS, "pipelines/lr.yml": PIPELINE}
    commit(repo, files, "lr")
    return str(repo)


def _ok(job: dict) -> dict:
    assert job["status"] == "succeeded", [(s["name"], s["error"]) for s in job["steps"] if s["error"]]
    return job


def _step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s["name"] == name)


def _input(step: dict, name: str) -> dict:
    return next(ref for ref in step["inputs"] if ref["name"] == name)


def content_hash(lake, table: str) -> str:
    """An order-independent hash of every row of ``table``."""
    with warehouse_backend(lake.settings()).session(read_only=True) as session:
        return str(session.rows(
            f"select md5(coalesce(string_agg(row_text, '|' order by row_text), '')) "
            f"from (select cast(t as varchar) as row_text from {table} t)")[0][0])


def _hashes(lake) -> dict[str, str]:
    return {table: content_hash(lake, table) for table in OUTPUTS}


def _run_first(lake, logic) -> dict:
    s3 = lake.client("s3")
    s3.put_object(Bucket=BUCKET, Key="lr/orders.csv", Body=ORDERS.encode())
    s3.put_object(Bucket=BUCKET, Key="lr/regions.csv", Body=REGIONS.encode())
    _ok(jobs.wait(jobs.submit(jobs.step("table", "load", table="lr_regions", key="lr/regions.csv")).job_id, 120))
    return _ok(jobs.wait(pipelines.submit("lr", logic, "main").job_id, timeout=240))


def test_plain_rerun_reproduces_the_tables_and_latest_data_reads_todays_inputs(lake, logic):
    first = _run_first(lake, logic)
    before = _hashes(lake)
    regions_then = _input(_step(first, "build"), "main.lr_regions")["facets"]["snapshot_id"]
    orders_then = _step(first, "load")["inputs"][0]["facets"]["version"]
    new_version = lake.client("s3").put_object(Bucket=BUCKET, Key="lr/orders.csv",
                                               Body=MORE_ORDERS.encode())["VersionId"]
    _ok(jobs.wait(jobs.submit(jobs.step("table", "insert", table="lr_regions",
                                        rows=[{"region": "n", "name": "Nord"}])).job_id, 120))

    again = _ok(jobs.wait(pipelines.rerun(first["id"]).job_id, timeout=240))
    assert _hashes(lake) == before
    assert _step(again, "report")["data"]["rows"] == _step(first, "report")["data"]["rows"]
    assert _step(again, "load")["inputs"][0]["facets"]["version"] == orders_then
    assert _input(_step(again, "build"), "main.lr_regions")["facets"]["snapshot_id"] == regions_then
    assert _input(_step(again, "report"), "main.lr_regions")["facets"]["snapshot_id"] == regions_then

    latest = _ok(jobs.wait(pipelines.rerun(first["id"], latest_data=True).job_id, timeout=240))
    after = _hashes(lake)
    for table in OUTPUTS:
        assert after[table] != before[table], table
    assert _step(latest, "load")["inputs"][0]["facets"]["version"] == new_version
    assert _input(_step(latest, "build"), "main.lr_regions")["facets"]["snapshot_id"] > regions_then
    assert _input(_step(latest, "build"), "main.lr_regions")["facets"]["rows"] == 3
    assert latest["trigger"] == "rerun-latest-data"


def test_query_as_of_a_job_a_step_or_a_snapshot_reads_tables_as_they_were(lake, logic):
    first = _run_first(lake, logic)
    load = _step(first, "load")
    _ok(jobs.wait(jobs.submit(jobs.step("table", "insert", table="lr_regions",
                                        rows=[{"region": "w", "name": "West"}])).job_id, 120))
    snapshot = load["outputs"][0]["facets"]["snapshot_id"]
    sql = "select count(*) from lr_regions"
    now = _ok(jobs.wait(jobs.submit(jobs.step("query", "run", sql=sql)).job_id, 60))
    assert _step_rows(now) == [[3]]
    for as_of in (first["id"], load["id"], str(snapshot)):
        then = _ok(jobs.wait(jobs.submit(jobs.step("query", "run", sql=sql, as_of=as_of)).job_id, 60))
        assert _step_rows(then) == [[2]], as_of
        assert then["steps"][0]["inputs"][0]["facets"]["rows"] == 2
    unknown = jobs.wait(jobs.submit(jobs.step("query", "run", sql=sql, as_of="no-such-job")).job_id, 60)
    assert unknown["status"] == "failed"
    assert "no-such-job" in unknown["steps"][0]["error"]["message"]


def _step_rows(job: dict) -> list:
    return job["steps"][0]["data"]["rows"]


def test_a_rerun_whose_lake_snapshot_expired_fails_naming_it_and_writes_nothing(lake, logic):
    first = _run_first(lake, logic)
    regions = _input(_step(first, "build"), "main.lr_regions")["facets"]["snapshot_id"]
    _ok(jobs.wait(jobs.submit(jobs.step("table", "insert", table="lr_regions",
                                        rows=[{"region": "e", "name": "East"}])).job_id, 120))
    before = _hashes(lake)
    with warehouse_backend(lake.settings()).connect() as con:
        expired = [row[0] for row in con.execute("select snapshot_id from lake.snapshots() "
                                                 "where snapshot_id <= ? and snapshot_id > 0", [regions]).fetchall()]
        con.execute(f"CALL ducklake_expire_snapshots('lake', versions => {expired})")

    with pytest.raises(VersionGone) as raised:
        pipelines.rerun(first["id"])
    assert "lr_regions" in raised.value.message
    assert str(regions) in raised.value.message
    refused = lake.registry.job(raised.value.details["job_id"])
    assert refused["status"] == "failed"
    assert all(str(regions) in step["error"]["message"] for step in refused["steps"])
    assert _hashes(lake) == before


def test_rerun_latest_with_latest_data_runs_todays_code_on_todays_inputs(lake: Any, logic: str) -> None:
    """`pudato rerun --latest --latest-data`: the ref's head and every input as it is now, both recorded."""
    first = _run_first(lake, logic)
    regions_then = _input(_step(first, "build"), "main.lr_regions")["facets"]["snapshot_id"]
    topped = TOTALS.replace("count(*) as n", "count(*) as n, max(amount) as top")
    (Path(logic) / "models/lr_totals.sql").write_text(topped)
    _git(Path(logic), "commit", "-q", "-am", "lr totals: top order")
    head = _git(Path(logic), "rev-parse", "HEAD")
    try:
        new_version = lake.client("s3").put_object(Bucket=BUCKET, Key="lr/orders.csv",
                                                   Body=MORE_ORDERS.encode())["VersionId"]
        _ok(jobs.wait(jobs.submit(jobs.step("table", "insert", table="lr_regions",
                                            rows=[{"region": "s", "name": "Sud"}])).job_id, 120))
        command = [str(Path(sys.executable).parent / "pudato"), "rerun", first["id"], "--latest", "--latest-data",
                   "--no-wait"]
        submitted = subprocess.run(command, env={**os.environ, **lake.env}, cwd=REPO, capture_output=True,
                                   text=True, timeout=120, check=False)  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        rerun = _ok(jobs.wait(submitted.stdout.strip().splitlines()[-1], timeout=240))
    finally:
        _git(Path(logic), "revert", "--no-edit", "HEAD")  # the module's other tests run the first code
    assert rerun["trigger"] == "rerun-latest-latest-data"
    assert first["logic_version"] != head
    assert rerun["logic_version"] == head
    assert _step(rerun, "load")["inputs"][0]["facets"]["version"] == new_version
    regions_now = _input(_step(rerun, "build"), "main.lr_regions")["facets"]
    assert regions_now["snapshot_id"] > regions_then
    assert regions_now["rows"] == 3
    with warehouse_backend(lake.settings()).session(read_only=True) as session:
        assert session.rows("select max(top) from lr_totals") == [(50,)]  # today's code on today's orders
