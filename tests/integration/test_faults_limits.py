"""Fault suite, runaway steps: a query past its queue's time limit fails, once, with a clear error.

The query worker is restarted with a 3 s soft limit (and the session's one put
back afterwards). DuckDB runs the query in native code, where Celery's soft
limit cannot reach; the step's deadline interrupts it.
"""

from __future__ import annotations

import time

import pytest

from pudato import devstack, jobs

pytestmark = pytest.mark.integration

RUNAWAY = "select sum(i * i % 7) as s from range(100000000000) t(i)"


def _restart_query_worker(stack, **env: str) -> None:
    devstack.stop(stack.workers["query"])
    process = devstack.start_worker("query", {**stack.env, **env},
                                    log_dir=stack.state / "logs" / f"limits-{time.monotonic_ns()}")
    devstack.wait_for_worker(process, "query")
    stack.workers["query"] = process


@pytest.fixture
def short_limits(stack):
    _restart_query_worker(stack, PUDATO_BROKER__QUEUES__QUERY__SOFT_TIME_LIMIT_S="3",
                          PUDATO_BROKER__QUEUES__QUERY__TIME_LIMIT_S="30")
    yield
    _restart_query_worker(stack)


def test_a_runaway_query_fails_at_its_time_limit_and_runs_once(stack, short_limits):
    started = time.monotonic()
    job = jobs.submit(jobs.step("query", "run", sql=RUNAWAY))
    record = jobs.wait(job.job_id, timeout=120)
    assert time.monotonic() - started < 60
    (step,) = record["steps"]
    assert step["status"] == "failed"
    assert step["error"]["type"] == "LimitExceeded"
    assert "time limit of 3 s" in step["error"]["message"]
    assert "PUDATO_BROKER__QUEUES__QUERY__SOFT_TIME_LIMIT_S" in step["error"]["message"]
    assert step["attempts"] == 1
    assert [entry["event"] for entry in step["history"]] == ["started", "finished"]
    assert stack.workers["query"].poll() is None
    after = jobs.wait(jobs.submit(jobs.step("query", "run", sql="select 42 as answer")).job_id, timeout=60)
    assert after["status"] == "succeeded"
