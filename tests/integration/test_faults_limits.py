"""Fault suite, runaway steps: a query past its queue's time limit fails, once, with a clear error.

The query worker is restarted with a 3 s soft limit (and the session's one put
back afterwards). DuckDB runs the query in native code, where Celery's soft
limit cannot reach; the step's deadline interrupts it.

A step that no interrupt reaches (DuckDB waiting in libpq on a lake catalog
table another session has locked) is ended by the hard limit: the pool kills
the process, the step is recorded failed once, and the worker lives on with a
new pool process. Celery's prefork pool sends the soft limit's signal at the soft
limit and kills ``hard - soft`` seconds later. The signal sometimes breaks DuckDB's
wait, and then the soft path ends the step; the test tries up to four times to see
the kill, and every try must fail the step once with ``LimitExceeded``. The limits
are far apart (3 s and 15 s): with equal ones, the soft path sometimes finished
within milliseconds of the kill, and once the job then stayed unfinished for the
test's whole two minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import pytest

from pudato import devstack, jobs
from workers.steps import MAX_TRANSIENT_RETRIES

pytestmark = pytest.mark.integration

RUNAWAY = "select sum(i * i % 7) as s from range(100000000000) t(i)"


def _restart_query_worker(stack, **env: str) -> None:
    devstack.stop(stack.workers["query"])
    process = devstack.start_worker("query", {**stack.env, **env},
                                    log_dir=stack.state / "logs" / f"limits-{time.monotonic_ns()}")
    devstack.wait_for_worker(process, "query")
    stack.workers["query"] = process


@pytest.fixture
def query_worker(stack, request):
    """The query worker restarted with the settings the test passes (``indirect``), and put back after."""
    _restart_query_worker(stack, **request.param)
    yield
    _restart_query_worker(stack)


def _lake_table(stack, table: str, csv: bytes) -> None:
    key = f"limits/{table}.csv"
    stack.client("s3").put_object(Bucket="pudato-test", Key=key, Body=csv)
    loaded = jobs.wait(jobs.submit(jobs.step("table", "load", table=table, key=key)).job_id, timeout=180)
    assert loaded["status"] == "succeeded", loaded


@pytest.mark.parametrize("query_worker", [{"PUDATO_BROKER__QUEUES__QUERY__SOFT_TIME_LIMIT_S": "3",
                                           "PUDATO_BROKER__QUEUES__QUERY__TIME_LIMIT_S": "30"}],
                         ids=["soft-3s"], indirect=True)  # fmt: skip
def test_a_runaway_query_fails_at_its_time_limit_and_runs_once(stack, query_worker):
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


@contextmanager
def _catalog_locked(stack) -> Iterator[None]:
    """Every lake statement waits while this holds the lake catalog's snapshot table."""
    con = psycopg2.connect(host="127.0.0.1", port=stack.postgres["port"], user="postgres", dbname="pudato_lake")
    try:
        with con.cursor() as cursor:
            cursor.execute("LOCK TABLE ducklake_snapshot IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        con.rollback()
        con.close()


@pytest.mark.parametrize("query_worker", [{"PUDATO_BROKER__QUEUES__QUERY__SOFT_TIME_LIMIT_S": "3",
                                           "PUDATO_BROKER__QUEUES__QUERY__TIME_LIMIT_S": "15"}],
                         ids=["soft-3s-hard-15s"], indirect=True)  # fmt: skip
def test_a_step_no_interrupt_reaches_is_killed_at_the_hard_limit_and_recorded_once(stack, query_worker):
    _lake_table(stack, "hard_limit_rows", b"id,name\n1,a\n2,b\n")
    killed = None
    for _ in range(4):
        with _catalog_locked(stack):
            job = jobs.submit(jobs.step("query", "run", sql="select count(*) as n from hard_limit_rows"))
            record = jobs.wait(job.job_id, timeout=120)
        (step,) = record["steps"]
        assert step["status"] == "failed"
        assert step["error"]["type"] == "LimitExceeded"
        assert step["attempts"] == 1
        if "hard time limit" in step["error"]["message"]:
            killed = step
            break
    assert killed is not None, "the soft limit's signal ended every try: the hard limit was never reached"
    assert "hard time limit of 15 s" in killed["error"]["message"]
    assert "PUDATO_BROKER__QUEUES__QUERY__TIME_LIMIT_S" in killed["error"]["message"]
    assert stack.workers["query"].poll() is None
    after = jobs.wait(jobs.submit(jobs.step("query", "run", sql="select count(*) as n from hard_limit_rows")).job_id,
                      timeout=120)  # fmt: skip
    assert after["status"] == "succeeded", after
    assert after["steps"][0]["data"]["rows"] == [[2]]


@pytest.mark.parametrize("query_worker", [{"PUDATO_WAREHOUSE__LOCK_TIMEOUT_S": "3"}], ids=["lock-3s"], indirect=True)
def test_a_locked_catalog_fails_the_step_at_the_lock_timeout_and_it_is_retried(stack, query_worker):
    _lake_table(stack, "lock_timeout_rows", b"id\n1\n2\n3\n")
    with _catalog_locked(stack):
        record = jobs.wait(jobs.submit(jobs.step("query", "run", sql="select count(*) from lock_timeout_rows")).job_id,
                           timeout=180)  # fmt: skip
    (step,) = record["steps"]
    assert step["status"] == "failed"
    assert step["error"]["type"] == "BackendUnavailable"
    assert "PUDATO_WAREHOUSE__LOCK_TIMEOUT_S" in step["error"]["message"]
    assert step["attempts"] == 1 + MAX_TRANSIENT_RETRIES
    after = jobs.wait(jobs.submit(jobs.step("query", "run", sql="select count(*) from lock_timeout_rows")).job_id,
                      timeout=120)  # fmt: skip
    assert after["steps"][0]["data"]["rows"] == [[3]]
