"""The worker glue without a broker: run_step's retries, carry_job_id, and the canvas round trip.

A Celery app of the test's own (in memory, never the current app) runs the tasks eagerly,
so these are Celery's real request and retry paths, not stand-ins.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
from celery import Celery
from celery._state import _task_stack

from pudato import deadline, jobs
from pudato.errors import BackendUnavailable, QueryFailed
from pudato.handlers.base import Handler, PingPayload, action
from pudato.pipelines import from_description
from pudato.protocol import JOB_HEADER, ErrorInfo, Outcome
from pudato.settings import get_settings
from pudato.signing import platform_key, sign
from workers.signals import carry_job_id
from workers.steps import (
    MAX_TRANSIENT_RETRIES,
    CommandRefused,
    HandlerTask,
    StepFailed,
    run_step,
    stopped_by_soft_limit,
)


class ScriptedHandler(Handler):
    """Fails with the errors it is given, one per attempt, then succeeds."""

    name = "storage"
    failures: ClassVar[list[Exception]] = []
    attempts: ClassVar[int] = 0

    @action("list", PingPayload)
    def list(self, payload: PingPayload) -> Outcome:
        type(self).attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return Outcome(data={"attempt": self.attempts})


@pytest.fixture()
def task() -> Iterator[Any]:
    app = Celery("glue-test", set_as_current=False, broker="memory://")
    app.conf.task_always_eager = True

    # Not "pudato.…": the step-recording signals (connected in this process) leave other tasks alone.
    @app.task(bind=True, base=HandlerTask, name="glue.storage.execute", handler_path="unused:Unused")
    def execute(self: HandlerTask, command: Any = None) -> dict[str, Any]:
        return run_step(self, command)

    execute._handler = ScriptedHandler()
    ScriptedHandler.attempts = 0
    yield execute
    ScriptedHandler.failures.clear()


def test_transient_failures_are_retried_until_the_step_succeeds(task: Any) -> None:
    ScriptedHandler.failures[:] = [BackendUnavailable("moto away"), BackendUnavailable("moto away")]
    command = {"handler": "storage", "action": "list", "job_id": "job-1", "step_id": "step-1"}
    command["signature"] = sign(command, platform_key(get_settings()))
    result = task.apply(kwargs={"command": command}).get()
    assert result["status"] == "succeeded"
    assert result["data"] == {"attempt": 3}
    assert result["job_id"] == "job-1"


def test_a_command_that_claims_a_job_without_the_signature_is_refused(task: Any) -> None:
    with pytest.raises(CommandRefused, match="without a valid platform signature"):
        task.apply(kwargs={"command": {"action": "list", "job_id": "job-1", "step_id": "step-1"}}).get()
    assert ScriptedHandler.attempts == 0


def test_transient_failures_stop_after_the_retry_limit(task: Any) -> None:
    ScriptedHandler.failures[:] = [BackendUnavailable("moto away")] * (MAX_TRANSIENT_RETRIES + 2)
    outcome = task.apply(kwargs={"command": {"action": "list"}})
    with pytest.raises(StepFailed, match="BackendUnavailable: moto away"):
        outcome.get()
    assert ScriptedHandler.attempts == MAX_TRANSIENT_RETRIES + 1


def test_terminal_failures_are_not_retried(task: Any) -> None:
    ScriptedHandler.failures[:] = [QueryFailed("no such table")]
    with pytest.raises(StepFailed) as failed:
        task.apply(kwargs={"command": {"action": "list"}}).get()
    assert ScriptedHandler.attempts == 1
    assert failed.value.details["result"]["error"]["kind"] == "terminal"


def test_a_message_without_a_command_fails_clearly(task: Any) -> None:
    with pytest.raises(Exception, match="carries no 'command'"):
        task.apply(kwargs={}).get()


def test_carry_job_id_keeps_an_existing_header() -> None:
    headers = {"id": "t2", "root_id": "t1", JOB_HEADER: "job-7"}
    carry_job_id(headers=headers)
    assert headers[JOB_HEADER] == "job-7"


def test_carry_job_id_falls_back_to_the_root_task_outside_a_task() -> None:
    headers: dict[str, Any] = {"id": "t2", "root_id": "t1"}
    carry_job_id(headers=headers)
    assert headers[JOB_HEADER] == "t1"


@contextmanager
def running(task: Any, headers: dict[str, Any], kwargs: dict[str, Any]) -> Iterator[None]:
    """``task`` as Celery's current task, with this request: as in a worker's pool process."""
    task.push_request(headers=headers, kwargs=kwargs)
    _task_stack.push(task)
    try:
        yield
    finally:
        _task_stack.pop()
        task.pop_request()


def test_carry_job_id_copies_the_running_tasks_job_id(task: Any) -> None:
    headers: dict[str, Any] = {"id": "next", "root_id": "first"}
    with running(task, {JOB_HEADER: "job-9"}, {}):
        carry_job_id(headers=headers)
    assert headers[JOB_HEADER] == "job-9"


def test_carry_job_id_reads_the_command_when_the_header_is_missing(task: Any) -> None:
    headers: dict[str, Any] = {"id": "next"}
    with running(task, {}, {"command": {"job_id": "job-3"}}):
        carry_job_id(headers=headers)
    assert headers[JOB_HEADER] == "job-3"


def _without_ids(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _without_ids(v) for k, v in document.items() if k != "step_id"}
    if isinstance(document, list):
        return [_without_ids(v) for v in document]
    return document


def _step_ids(document: Any) -> list[str]:
    if isinstance(document, dict):
        own = [document["step_id"]] if "step_id" in document else []
        return own + [i for v in document.values() for i in _step_ids(v)]
    if isinstance(document, list):
        return [i for v in document for i in _step_ids(v)]
    return []


def test_a_described_canvas_rebuilds_the_same_shape_with_fresh_ids() -> None:
    canvas = jobs.chord(
        [jobs.chain(jobs.step("storage", "put", name="ingest", key="a.csv"),
                    jobs.step("table", "load", name="load", table="a", key="a.csv")),
         jobs.group(jobs.step("storage", "ping"), jobs.step("catalog", "list"))],
        jobs.step("query", "run", name="compare", sql="select 1"),
    )
    described = jobs.describe(canvas)
    rebuilt = jobs.describe(from_description(described))
    assert _without_ids(rebuilt) == _without_ids(described)
    assert set(_step_ids(rebuilt)).isdisjoint(_step_ids(described))
    assert len(_step_ids(rebuilt)) == 5


def test_duckdb_interrupted_after_the_deadline_counts_as_the_soft_limit() -> None:
    interrupted = ErrorInfo(type="RuntimeError", kind="error", message="Query interrupted")
    with deadline.step_deadline(0.0, "PUDATO_BROKER__QUEUES__QUERY__SOFT_TIME_LIMIT_S"):
        assert stopped_by_soft_limit(interrupted)
    with deadline.step_deadline(600.0):
        assert not stopped_by_soft_limit(interrupted)  # someone else interrupted it: not a limit
    assert not stopped_by_soft_limit(interrupted)
    assert stopped_by_soft_limit(ErrorInfo(type="SoftTimeLimitExceeded", kind="error", message=""))
