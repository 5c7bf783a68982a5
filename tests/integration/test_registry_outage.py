"""PostgreSQL stopped in the middle of a job and started again: no step record is lost."""

from __future__ import annotations

import time

import pytest

from pudato import jobs

pytestmark = pytest.mark.integration


def test_no_step_record_is_lost_when_postgres_restarts(stack):
    control = stack.postgres["control"]
    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", key="outage/a.csv", content="k,v\n1,2\n"),
            jobs.step("table", "load", table="outage_a", key="outage/a.csv"),
            jobs.step("query", "run", sql="select count(*) as n from outage_a"),
        )
    )
    control.stop()
    try:
        time.sleep(4)  # the steps run meanwhile; their records and results wait for the database
    finally:
        control.start()
    record = jobs.wait(job.job_id, timeout=120)
    assert record["status"] == "succeeded"
    assert [s["status"] for s in record["steps"]] == ["succeeded"] * 3
    assert all(s["finished_at"] and s["outputs"] is not None for s in record["steps"])
    logs = stack.worker_log("storage") + stack.worker_log("table") + stack.worker_log("query")
    assert "retrying in" in logs, "the outage did not overlap the job; the test proved nothing"
    again = jobs.wait(jobs.submit(jobs.step("query", "run", sql="select 1")).job_id, timeout=60)
    assert again["status"] == "succeeded"
