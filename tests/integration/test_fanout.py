"""Every step's Result reaches a queue subscribed to the results topic, exactly once."""

from __future__ import annotations

import json
import time

import pytest

from pudato import jobs

pytestmark = pytest.mark.integration


def _subscribed_queue(stack, topic: str, name: str) -> str:
    sqs, sns = stack.client("sqs"), stack.client("sns")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic_arn = sns.create_topic(Name=topic)["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return url


def _drain(stack, url: str, settle_s: float = 3.0) -> list[dict]:
    sqs = stack.client("sqs")
    bodies, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < settle_s:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if messages:
            quiet_since = time.monotonic()
    return bodies


def test_results_topic_gets_exactly_one_result_per_step(stack):
    url = _subscribed_queue(stack, "pudato-results", "test-results-subscriber")
    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", key="fanout/a.csv", content="x,y\n1,2\n"),
            jobs.step("table", "load", table="fanout_a", key="fanout/a.csv"),
            jobs.step("query", "run", sql="select * from fanout_a"),
        )
    )
    assert jobs.wait(job.job_id, timeout=90)["status"] == "succeeded"
    results = [r for r in _drain(stack, url) if r["job_id"] == job.job_id]
    assert sorted(r["step_id"] for r in results) == sorted(s.step_id for s in job.steps)
    assert all(r["status"] == "succeeded" for r in results)


def test_failed_results_carry_the_error_and_events_announce_the_job(stack):
    results_url = _subscribed_queue(stack, "pudato-results", "test-results-failures")
    events_url = _subscribed_queue(stack, "pudato-events", "test-events-subscriber")
    job = jobs.submit(jobs.step("query", "run", sql="select * from nowhere_at_all"))
    assert jobs.wait(job.job_id, timeout=60)["status"] == "failed"
    (result,) = [r for r in _drain(stack, results_url) if r["job_id"] == job.job_id]
    assert result["status"] == "failed"
    assert "nowhere_at_all" in result["error"]["message"]
    events = [e for e in _drain(stack, events_url) if e.get("job_id") == job.job_id]
    assert [e["detail"]["status"] for e in events if e["type"] == "job.finished"] == ["failed"]
