"""PostgreSQL stopped in the middle of a job and started again: no step record is lost."""

from __future__ import annotations

import pytest
from helpers import wait_for

from pudato import jobs

pytestmark = pytest.mark.integration


def test_no_step_record_is_lost_when_postgres_restarts(stack):
    control = stack.postgres["control"]

    def retries() -> int:
        logs = stack.worker_log("storage") + stack.worker_log("table") + stack.worker_log("query")
        return logs.count("retrying in")

    before = retries()
    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", key="outage/a.csv", content="k,v\n1,2\n"),
            jobs.step("table", "load", table="outage_a", key="outage/a.csv"),
            jobs.step("query", "run", sql="select count(*) as n from outage_a"),
        )
    )
    control.stop()
    try:
        # The outage lasts until a step has met it; its records and results wait for the database.
        wait_for(lambda: retries() > before, 90, "no step met the outage")
    finally:
        control.start()
    record = jobs.wait(job.job_id, timeout=120)
    assert record["status"] == "succeeded"
    assert [s["status"] for s in record["steps"]] == ["succeeded"] * 3
    assert all(s["finished_at"] and s["outputs"] is not None for s in record["steps"])
    again = jobs.wait(jobs.submit(jobs.step("query", "run", sql="select 1")).job_id, timeout=60)
    assert again["status"] == "succeeded"


def _exists(s3, bucket: str, keys: list[str]) -> bool:
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="outage/run/").get("Contents", [])}
    return set(keys) <= listed


def test_tasks_keep_running_and_chords_complete_through_a_registry_outage(stack):
    """No task waits for the result backend: a chain runs to its end while PostgreSQL is down,
    and a chord whose header finished during the outage sends its body once it is back."""
    control = stack.postgres["control"]
    s3, bucket = stack.client("s3"), stack.env["PUDATO_STORAGE__BUCKET"]
    deferred = "is stored once it is back"
    before = stack.worker_log("storage").count(deferred)

    def put(key: str) -> jobs.Step:
        return jobs.step("storage", "put", key=key, content="k\n1\n")

    chain_keys = [f"outage/run/chain-{i}.csv" for i in range(12)]
    header_keys = [[f"outage/run/chord-{h}-{i}.csv" for i in range(6)] for h in range(2)]
    in_chain = jobs.submit(jobs.chain(*[put(k) for k in chain_keys]))
    in_chord = jobs.submit(jobs.chord([jobs.chain(*[put(k) for k in keys]) for keys in header_keys],
                                      put("outage/run/chord-body.csv")))
    control.stop()
    try:
        wait_for(lambda: _exists(s3, bucket, chain_keys + header_keys[0] + header_keys[1]), 90,
                  "the steps did not all run while the registry was down")
        assert stack.worker_log("storage").count(deferred) > before, "no result waited: the outage missed the job"
        assert not _exists(s3, bucket, ["outage/run/chord-body.csv"]), "the chord's body ran without its counter"
    finally:
        control.start()
    for job in (in_chain, in_chord):
        record = jobs.wait(job.job_id, timeout=180)
        assert record["status"] == "succeeded"
        assert all(s["status"] == "succeeded" for s in record["steps"])
    assert _exists(s3, bucket, ["outage/run/chord-body.csv"])
