"""OpenLineage from real workers to a real HTTP receiver: every event valid, in order, and none lost."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pudato import jobs, pipelines
from pudato.demo import ingest_steps, make_logic_repo

pytestmark = pytest.mark.integration

TERMINAL = {"COMPLETE", "FAIL", "ABORT"}


def _wait_for(receiver, job_id: str, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """The job's events once its own run has ended and ``count`` events arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = receiver.of_job(job_id)
        ended = any(e["run"]["runId"] == job_id and e["eventType"] in TERMINAL for e in events)
        if ended and len(events) >= count:
            return events
        time.sleep(0.2)
    got = [(e["job"]["name"], e["eventType"]) for e in receiver.of_job(job_id)]
    raise AssertionError(f"job {job_id}: {len(got)} of {count} events arrived in {timeout}s: {got}")


def _runs_in_order(events: list[dict[str, Any]], job_id: str) -> None:
    """Each run starts before it ends, once each; the job's run opens first and closes last."""
    by_run: dict[str, list[str]] = {}
    for event in events:
        by_run.setdefault(event["run"]["runId"], []).append(event["eventType"])
    for run_id, kinds in by_run.items():
        assert kinds[0] == "START" or kinds == ["ABORT"], (run_id, kinds)
        assert len(kinds) <= 2, (run_id, kinds)
    assert events[0]["run"]["runId"] == job_id
    assert events[0]["eventType"] == "START"
    assert events[-1]["run"]["runId"] == job_id


def test_the_demo_job_sends_valid_events_in_order(stack, lineage_receiver, openlineage_validate, tmp_path):
    repo = tmp_path / "logic"
    sha = make_logic_repo(repo)
    submitted = pipelines.submit("la_revenue", str(repo), "main", before=[ingest_steps()])
    job = jobs.wait(submitted.job_id, timeout=300)
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
    events = _wait_for(lineage_receiver, job["id"], 2 + 2 * len(job["steps"]))
    for event in events:
        openlineage_validate(event)
    _runs_in_order(events, job["id"])
    assert events[-1]["eventType"] == "COMPLETE"
    step_ids = {e["run"]["runId"] for e in events} - {job["id"]}
    assert step_ids == {s["id"] for s in job["steps"]}
    build = next(e for e in events if e["eventType"] == "COMPLETE"
                 and e["job"]["facets"]["jobType"]["jobType"] == "TRANSFORM.BUILD")
    location = build["job"]["facets"]["sourceCodeLocation"]
    assert location["version"] == sha
    assert location["url"] == f"file://{repo}"
    assert build["job"]["facets"]["sql"]["query"]
    outputs = {o["name"]: o for o in build["outputs"]}
    mart = outputs["main.fct_gf_revenue"]
    assert mart["facets"]["schema"]["fields"]
    assert mart["facets"]["version"]["datasetVersion"]
    assert mart["outputFacets"]["outputStatistics"]["rowCount"] > 0
    assert mart["facets"]["dataQualityAssertions"]["assertions"]
    assert any("columnLineage" in o["facets"] for o in build["outputs"])


def test_a_failing_step_sends_fail_with_the_error(stack, lineage_receiver, openlineage_validate):
    submitted = jobs.submit(jobs.step("query", "run", sql="select no_such_column from range(1)"))
    job = jobs.wait(submitted.job_id, timeout=120)
    assert job["status"] == "failed"
    events = _wait_for(lineage_receiver, job["id"], 4)
    for event in events:
        openlineage_validate(event)
    [fail] = [e for e in events if e["run"]["runId"] == job["steps"][0]["id"] and e["eventType"] == "FAIL"]
    assert "no_such_column" in fail["run"]["facets"]["errorMessage"]["message"]
    assert events[-1]["eventType"] == "FAIL"


def test_every_event_arrives_after_the_receiver_restarts(stack, lineage_receiver, openlineage_validate):
    lineage_receiver.stop()
    try:
        submitted = jobs.submit(jobs.chain(
            jobs.step("storage", "put", key="lineage/outage.csv", content="k,v\n1,2\n"),
            jobs.step("query", "run", sql="select 1 as one"),
        ))
        job = jobs.wait(submitted.job_id, timeout=120)
        assert job["status"] == "succeeded"
        assert lineage_receiver.of_job(job["id"]) == []
    finally:
        lineage_receiver.start()
    events = _wait_for(lineage_receiver, job["id"], 6)
    assert len(events) == 6
    for event in events:
        openlineage_validate(event)
    # Each worker process keeps its own events in order; after an outage, two workers' queues
    # drain side by side, so the job's order is the events' times (what Marquez orders by).
    for run_id in {e["run"]["runId"] for e in events} - {job["id"]}:
        assert [e["eventType"] for e in events if e["run"]["runId"] == run_id] == ["START", "COMPLETE"]
    _runs_in_order(sorted(events, key=lambda e: e["eventTime"]), job["id"])
    logs = stack.worker_log("storage") + stack.worker_log("query")
    assert "openlineage: delivery failed" in logs, "the receiver was never found down; the test proved nothing"
