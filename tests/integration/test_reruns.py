"""Exact reruns through real workers: inputs read at their recorded versions, or today's with --latest-data.

A job stores a lookup object, loads a table from an S3 object it did not write,
and queries both. After it ran, the S3 input is overwritten. A plain rerun reads
the recorded S3 version (same table, same rows); ``--latest-data`` reads the new
one and records its version; a rerun whose input version was deleted is refused
with the dataset and the version named, and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pudato import jobs, pipelines, versions
from pudato.backends.warehouse import warehouse_backend
from pudato.errors import VersionGone

pytestmark = pytest.mark.integration

BUCKET = "pudato-test"
ORDERS = "id,region,amount\n1,n,10\n2,s,20\n3,n,5\n"
MORE_ORDERS = ORDERS + "4,s,40\n5,n,50\n"
RATES = "region,rate\nn,1.5\ns,2\n"
REPORT = ("select o.region, sum(o.amount * r.rate) as total, count(*) as n "
          "from rr_orders o join rates r using (region) group by all order by 1")


def _job(prefix: str) -> jobs.Node:
    return jobs.chain(
        jobs.step("storage", "put", name="rates", key=f"{prefix}/rates.csv", content=RATES),
        jobs.step("table", "load", name="load", table=f"{prefix}_orders", key=f"{prefix}/orders.csv"),
        jobs.step("query", "run", name="report", sql=REPORT.replace("rr_orders", f"{prefix}_orders"),
                  sources={"rates": {"key": f"{prefix}/rates.csv"}}),
    )


def content_hash(stack, table: str) -> str:
    """An order-independent hash of every row of ``table``."""
    with warehouse_backend(stack.settings()).session(read_only=True) as session:
        return str(session.rows(
            f"select md5(coalesce(string_agg(row_text, '|' order by row_text), '')) "
            f"from (select cast(t as varchar) as row_text from {table} t)")[0][0])


def _step(job: dict, name: str) -> dict:
    return next(s for s in job["steps"] if s["name"] == name)


def _first_run(stack, prefix: str) -> tuple[dict, str]:
    s3 = stack.client("s3")
    version = s3.put_object(Bucket=BUCKET, Key=f"{prefix}/orders.csv", Body=ORDERS.encode())["VersionId"]
    first = jobs.wait(jobs.submit(_job(prefix), name=prefix).job_id, timeout=120)
    assert first["status"] == "succeeded", [s["error"] for s in first["steps"]]
    assert _step(first, "load")["inputs"][0]["facets"]["version"] == version
    return first, version


def test_plain_rerun_reads_the_recorded_s3_version_and_latest_data_reads_todays(stack):
    first, version = _first_run(stack, "rr")
    before = content_hash(stack, "rr_orders")
    new_version = stack.client("s3").put_object(Bucket=BUCKET, Key="rr/orders.csv",
                                                Body=MORE_ORDERS.encode())["VersionId"]

    again = jobs.wait(pipelines.rerun(first["id"]).job_id, timeout=120)
    assert again["status"] == "succeeded", [s["error"] for s in again["steps"]]
    assert again["parent_job_id"] == first["id"]
    assert again["trigger"] == "rerun"
    assert content_hash(stack, "rr_orders") == before
    assert _step(again, "load")["inputs"][0]["facets"]["version"] == version
    assert _step(again, "report")["data"]["rows"] == _step(first, "report")["data"]["rows"]

    latest = jobs.wait(pipelines.rerun(first["id"], latest_data=True).job_id, timeout=120)
    assert latest["status"] == "succeeded", [s["error"] for s in latest["steps"]]
    assert latest["trigger"] == "rerun-latest-data"
    assert content_hash(stack, "rr_orders") != before
    assert _step(latest, "load")["inputs"][0]["facets"]["version"] == new_version
    assert _step(latest, "load")["outputs"][0]["facets"]["rows"] == 5
    assert _step(latest, "report")["data"]["rows"] != _step(first, "report")["data"]["rows"]


def test_a_rerun_whose_input_version_is_gone_fails_naming_it_and_writes_nothing(stack):
    first, version = _first_run(stack, "gone")
    stack.client("s3").put_object(Bucket=BUCKET, Key="gone/orders.csv", Body=MORE_ORDERS.encode())
    stack.client("s3").delete_object(Bucket=BUCKET, Key="gone/orders.csv", VersionId=version)
    before = content_hash(stack, "gone_orders")

    with pytest.raises(VersionGone) as raised:
        pipelines.rerun(first["id"])
    assert "s3://pudato-test/gone/orders.csv" in raised.value.message
    assert version in raised.value.message
    refused = stack.registry.job(raised.value.details["job_id"])
    assert refused["status"] == "failed"
    assert refused["parent_job_id"] == first["id"]
    load = _step(refused, "load")
    assert load["status"] == "failed"
    assert version in load["error"]["message"]
    assert content_hash(stack, "gone_orders") == before
    assert stack.client("s3").get_object(Bucket=BUCKET, Key="gone/rates.csv")["Body"].read() == RATES.encode()


def test_a_step_whose_pinned_version_vanished_after_the_check_fails_on_the_worker(stack):
    first, version = _first_run(stack, "late")
    stack.client("s3").put_object(Bucket=BUCKET, Key="late/orders.csv", Body=MORE_ORDERS.encode())
    stack.client("s3").delete_object(Bucket=BUCKET, Key="late/orders.csv", VersionId=version)
    load = _step(first, "load")
    pinned = jobs.Step("table", "load", load["payload"], "load",
                       pinned_inputs=[pipelines.reruns.recorded_pin(load["inputs"][0])])
    job = jobs.wait(jobs.submit(pinned).job_id, timeout=60)
    (step,) = job["steps"]
    assert step["status"] == "failed"
    assert step["error"]["type"] == "VersionGone"
    assert "s3://pudato-test/late/orders.csv" in step["error"]["message"]
    assert version in step["error"]["message"]


def test_datasets_history_lists_every_version_with_its_job_step_and_sha(stack):
    first, _ = _first_run(stack, "hist")
    stack.client("s3").put_object(Bucket=BUCKET, Key="hist/orders.csv", Body=MORE_ORDERS.encode())
    latest = jobs.wait(pipelines.rerun(first["id"], latest_data=True).job_id, timeout=120)
    assert latest["status"] == "succeeded"

    table = _step(first, "load")["outputs"][0]
    rows = versions.history(stack.registry, f"{table['namespace']}/{table['name']}")
    assert [r["job_id"] for r in rows] == [first["id"], latest["id"]]
    assert [r["step_id"] for r in rows] == [_step(first, "load")["id"], _step(latest, "load")["id"]]
    assert [r["rows"] for r in rows] == [3, 5]

    rates = versions.history(stack.registry, f"s3://{BUCKET}/hist/rates.csv")
    assert len(rates) == 2
    assert all(r["version"] for r in rates)
    assert rates[0]["version"] != rates[1]["version"]

    shown = subprocess.run([sys.executable, "-m", "pudato", "datasets", "history", "main.hist_orders", "--json"],
                           capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert [d["job_id"] for d in document] == [first["id"], latest["id"]]
