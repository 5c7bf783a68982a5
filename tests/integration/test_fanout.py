"""Every step's Result reaches a queue subscribed to the results topic, exactly once."""

from __future__ import annotations

import json

import pytest
from helpers import drain, subscribed_queue

from pudato import jobs

pytestmark = pytest.mark.integration






def test_results_topic_gets_exactly_one_result_per_step(stack):
    url = subscribed_queue(stack, "pudato-results", "test-results-subscriber")
    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", key="fanout/a.csv", content="x,y\n1,2\n"),
            jobs.step("table", "load", table="fanout_a", key="fanout/a.csv"),
            jobs.step("query", "run", sql="select * from fanout_a"),
        )
    )
    assert jobs.wait(job.job_id, timeout=90)["status"] == "succeeded"
    results = [r for r in [json.loads(b) for b in drain(stack, url)] if r["job_id"] == job.job_id]
    assert sorted(r["step_id"] for r in results) == sorted(s.step_id for s in job.steps)
    assert all(r["status"] == "succeeded" for r in results)


def test_failed_results_carry_the_error_and_events_announce_the_job(stack):
    results_url = subscribed_queue(stack, "pudato-results", "test-results-failures")
    events_url = subscribed_queue(stack, "pudato-events", "test-events-subscriber")
    job = jobs.submit(jobs.step("query", "run", sql="select * from nowhere_at_all"))
    assert jobs.wait(job.job_id, timeout=60)["status"] == "failed"
    (result,) = [r for r in [json.loads(b) for b in drain(stack, results_url)] if r["job_id"] == job.job_id]
    assert result["status"] == "failed"
    assert "nowhere_at_all" in result["error"]["message"]
    events = [e for e in [json.loads(b) for b in drain(stack, events_url)] if e.get("job_id") == job.job_id]
    assert [e["detail"]["status"] for e in events if e["type"] == "job.finished"] == ["failed"]
