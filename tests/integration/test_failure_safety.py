"""Workers that fail safely: a worker killed mid-task, a poison message, a dead-letter replay.

These tests restart the session's query worker with their own settings and put
it back as it was when they finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import wait_for as _wait_for

from pudato import devstack, jobs, queues
from pudato.lineage.events import run_id

pytestmark = pytest.mark.integration

SLOW_SQL = "select sum(i * i % 7) as s from range(1000000000) t(i)"


def _step(stack, job_id: str) -> dict:
    return stack.registry.job(job_id)["steps"][0]


def _restart_query_worker(stack, **env: str) -> None:
    devstack.stop(stack.workers["query"])
    process = devstack.start_worker(
        "query", {**stack.env, **env}, log_dir=stack.state / "logs" / str(time.monotonic_ns())
    )
    devstack.wait_for_worker(process, "query")
    stack.workers["query"] = process


def _set_attributes(stack, sqs, url: str, attributes: dict[str, str]) -> None:
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    # A long poll already waiting keeps the visibility it started with: let it end.
    time.sleep(stack.settings().broker.wait_time_seconds + 1)


@pytest.fixture
def query_queue(stack):
    """The pudato-query queue's attributes, restored (with a default worker) afterwards."""
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName="pudato-query")["QueueUrl"]
    saved = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"])["Attributes"]
    yield sqs, url
    sqs.set_queue_attributes(QueueUrl=url, Attributes=saved)
    _restart_query_worker(stack)


def test_a_worker_killed_mid_task_loses_nothing_and_the_step_completes_once(stack, query_queue):
    sqs, url = query_queue
    _set_attributes(stack, sqs, url, {"VisibilityTimeout": "20"})
    job = jobs.submit(jobs.step("query", "run", sql=SLOW_SQL))
    _wait_for(lambda: _step(stack, job.job_id)["status"] == "running", 60, "the step never started")
    os.killpg(stack.workers["query"].pid, signal.SIGKILL)  # the whole worker: main process and pool
    stack.workers["query"].wait()
    # The message comes back 20 s after the killed worker took it. The restarted worker takes it with the
    # visibility set here: long, so a second run slowed by a busy machine is not handed out a third time.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "600"})
    _restart_query_worker(stack)
    record = jobs.wait(job.job_id, timeout=180)
    assert record["status"] == "succeeded"
    step = record["steps"][0]
    assert step["attempts"] == 2
    events = [entry["event"] for entry in step["history"]]
    assert events == ["started", "started", "finished"], step["history"]


def test_a_poison_message_is_dead_lettered_failed_and_replayed(stack, query_queue, lineage_receiver):
    sqs, url = query_queue
    dlq_arn = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )["deadLetterTargetArn"]
    _set_attributes(
        stack, sqs, url, {"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})}
    )
    _restart_query_worker(stack, PUDATO_BROKER__QUEUES__QUERY__MAX_RECEIVE_COUNT="2")
    settings = stack.settings()
    job = jobs.submit(jobs.step("query", "run", sql=SLOW_SQL))
    for attempt in (1, 2):  # the pool process dies on every receive: a poison message
        _wait_for(
            lambda attempt=attempt: (
                _step(stack, job.job_id)["attempts"] == attempt and _step(stack, job.job_id)["status"] == "running"
            ),
            60,
            f"attempt {attempt} never started",
        )
        children = subprocess.run(["pgrep", "-P", str(stack.workers["query"].pid)], capture_output=True, text=True)
        for pid in children.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
    record = jobs.wait(job.job_id, timeout=60)
    assert record["status"] == "failed"
    step = record["steps"][0]
    assert step["error"]["type"] == "DeadLettered"
    assert "pudato-query-dlq" in step["error"]["message"]
    assert [e["event"] for e in step["history"]].count("lost") == 2
    aborted = _wait_for(
        lambda: [e for e in lineage_receiver.of_job(job.job_id) if e["eventType"] == "ABORT"],
        60,
        "no OpenLineage ABORT for the dead-lettered step",
    )
    assert [e["run"]["runId"] for e in aborted] == [run_id(step["id"])]
    assert "DeadLettered" in aborted[0]["run"]["facets"]["errorMessage"]["message"]

    dead = _wait_for(lambda: queues.dead_letters(settings, "query"), 30, "nothing reached the dead-letter queue")
    assert [d["job_id"] for d in dead] == [job.job_id]
    assert dead[0]["command"]["payload"]["sql"] == SLOW_SQL
    assert queues.replay(settings, "query") == 1
    replayed = _wait_for(
        lambda: (j := stack.registry.job(job.job_id))["status"] == "succeeded" and j,
        120,
        "the replayed step did not succeed",
    )
    assert replayed["steps"][0]["status"] == "succeeded"
    assert not queues.dead_letters(settings, "query")


def test_queue_depths_and_worker_liveness(stack):
    from workers.liveness import is_alive, liveness_file

    rows = {row["queue"]: row for row in queues.depths(stack.settings())}
    assert set(rows) == {"pudato-storage", "pudato-query", "pudato-table", "pudato-catalog", "pudato-transform"}
    assert all({"visible", "in_flight", "delayed", "dead_letters"} <= set(row) for row in rows.values())
    alive = [path.stem for path in liveness_file("x").parent.glob("*.alive")]
    assert any(name.startswith("storage@") for name in alive), alive
    assert all(is_alive(name, max_age_s=30) for name in alive)
