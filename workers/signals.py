"""Celery signals that record every step and fan its Result out.

* ``before_task_publish``: every message a Pudato task publishes (chain
  continuations, chord bodies) carries the job id of the task publishing it.
* ``task_prerun`` / ``task_success`` / ``task_failure`` / ``task_retry``: a
  :class:`StepUpdate` for the registry, written by a background drain.
* ``task_success`` / ``task_failure``: the Result and its Events go to SNS.
* ``worker_process_init`` / ``worker_ready``: start the record drain, which writes the
  journalled records of pool processes that died (pudato.journal).
* ``worker_process_shutdown``: flush both drains; spool what the registry could not take.

Only tasks named ``pudato.*`` are recorded; Celery's own tasks are not steps.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from celery import signals
from celery.exceptions import TimeLimitExceeded

from pudato.fanout import Publisher
from pudato.protocol import JOB_HEADER, ErrorInfo, Event, Result, utcnow
from pudato.registry.recorder import StepRecorder
from pudato.registry.repository import Registry, StepUpdate, UpdateEvent
from pudato.settings import get_settings
from workers.identity import identify

if TYPE_CHECKING:
    from pudato.lineage.emitter import LineageEmitter

log = logging.getLogger(__name__)

Receiver = TypeVar("Receiver", bound=Callable[..., None])


def on(*celery_signals: Any) -> Callable[[Receiver], Receiver]:
    """``signal.connect`` as a decorator that keeps the receiver's type (Celery ships no types)."""

    def connect(receiver: Receiver) -> Receiver:
        for signal in celery_signals:
            signal.connect(receiver)
        return receiver

    return connect

_recorder: StepRecorder | None = None
_publisher: Publisher | None = None
_lineage: LineageEmitter | None = None


def publisher() -> Publisher | None:
    global _publisher
    settings = get_settings()
    if _publisher is None and settings.fanout.enabled:
        _publisher = Publisher(settings)
    return _publisher


def recorder() -> StepRecorder:
    global _recorder
    if _recorder is None:
        settings = get_settings()
        registry = Registry(settings.registry.url)
        global _lineage
        if settings.lineage.emits():
            from pudato.lineage.emitter import LineageEmitter  # the OpenLineage client, only when used

            _lineage = LineageEmitter(registry, settings.lineage.namespace, settings.registry.spool_dir)
        _recorder = StepRecorder(registry, settings.registry.spool_dir, _job_finished,
                                 on_written=_lineage.observe if _lineage else None)
    return _recorder


def _job_finished(update: StepUpdate, status: str) -> None:
    fanout = publisher()
    if fanout:
        fanout.event(Event(type="job.finished", job_id=update.job_id, detail={"status": status}))


def _is_step(task: Any) -> bool:
    return bool(task and task.name and task.name.startswith("pudato."))


def _worker_name(task: Any) -> str:
    return getattr(task.request, "hostname", None) or f"{socket.gethostname()}:{os.getpid()}"


def _refused(task: Any, kwargs: dict[str, Any] | None = None) -> bool:
    return bool(identify(task.request, kwargs if kwargs is not None else task.request.kwargs)["refused"])


def _update(task: Any, event: UpdateEvent, kwargs: dict[str, Any] | None, **fields: Any) -> StepUpdate:
    ids = identify(task.request, kwargs)
    raw = (kwargs or {}).get("command")
    payload = raw.get("payload") if isinstance(raw, dict) and isinstance(raw.get("payload"), dict) else None
    return StepUpdate(
        event=event,
        step_id=ids["step_id"],
        job_id=ids["job_id"],
        handler=task.name.split(".")[1],
        action=ids["action"],
        task_id=task.request.id,
        worker=_worker_name(task),
        payload=payload,
        name=ids["name"] or None,
        **fields,
    )


@on(signals.before_task_publish)
def carry_job_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    from celery import current_task

    if headers is None or headers.get(JOB_HEADER):
        return
    parent = current_task._get_current_object() if current_task else None
    if parent is not None and parent.request is not None:
        job_id = (parent.request.headers or {}).get(JOB_HEADER) if parent.request.headers else None
        command = (parent.request.kwargs or {}).get("command")
        job_id = job_id or (command.get("job_id") if isinstance(command, dict) else None)
        if job_id:
            headers[JOB_HEADER] = job_id
            return
    headers[JOB_HEADER] = headers.get("root_id") or headers.get("id")


@on(signals.task_prerun)
def step_started(task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    if not _is_step(task):
        return
    reason = identify(task.request, kwargs)["refused"]
    if reason:  # nothing under the ids it claims: one rejected_messages row, with the command
        command = (kwargs or {}).get("command")
        recorder().record(_update(task, "refused", kwargs, error={"type": "CommandRefused",
                                  "message": reason}, data={"command": command}))
        return
    recorder().record(_update(task, "started", kwargs, started_at=utcnow()))


@on(signals.task_success)
def step_succeeded(sender: Any = None, result: Any = None, **_: Any) -> None:
    if not _is_step(sender) or _refused(sender):
        return
    outcome = Result.model_validate(result)
    _finish(sender, sender.request.kwargs, outcome)


@on(signals.task_failure)
def step_failed(sender: Any = None, exception: BaseException | None = None, kwargs: Any = None, **_: Any) -> None:
    # A hard time limit is signalled in the worker's main process, where the task's request is not
    # this one: workers.request.PudatoRequest.on_timeout records it.
    if not _is_step(sender) or isinstance(exception, TimeLimitExceeded) or _refused(sender, kwargs):
        return
    details = getattr(exception, "details", None) or {}
    if "result" in details:
        outcome = Result.model_validate(details["result"])
    else:
        outcome = _result_from_exception(sender, kwargs, exception)
    _finish(sender, kwargs, outcome)


@on(signals.task_retry)
def step_retried(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    if _is_step(sender) and not _refused(sender):
        recorder().record(_update(sender, "retried", request.kwargs if request else None,
                                  error={"type": "Retry", "message": str(reason)}))


@on(signals.worker_process_init, signals.worker_ready)
def start_recording(**_: Any) -> None:
    # At once, not at the first task: a pool process that replaces a SIGKILLed one writes its records.
    recorder().drain.start()


@on(signals.worker_process_shutdown, signals.worker_shutdown)
def flush_on_shutdown(**_: Any) -> None:
    if _publisher is not None:
        _publisher.drain.close(timeout=5.0)
    if _recorder is not None:
        _recorder.drain.close(timeout=10.0)
    if _lineage is not None:  # after the recorder: its last updates queue the last events
        _lineage.drain.close(timeout=10.0)


def record_result(request: Any, outcome: Result) -> None:
    """Record and publish a Result decided outside the task (the consumer saw it dead-lettered)."""
    recorder().record(
        StepUpdate(event="finished", step_id=outcome.step_id, job_id=outcome.job_id or outcome.step_id,
                   handler=outcome.handler, action=outcome.action, task_id=request.id, worker=request.hostname,
                   status=outcome.status, finished_at=outcome.finished_at,
                   error=outcome.error.model_dump(mode="json") if outcome.error else None)
    )
    fanout = publisher()
    if fanout:
        fanout.result(outcome)


def _finish(task: Any, kwargs: dict[str, Any] | None, outcome: Result) -> None:
    recorder().record(
        _update(
            task,
            "finished",
            kwargs,
            status=outcome.status,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            duration_ms=outcome.duration_ms,
            inputs=outcome.inputs,
            outputs=outcome.outputs,
            executions=[e.model_dump(mode="json") for e in outcome.executions],
            data=_bounded(outcome.data),
            logic_version=outcome.logic_version,
            error=outcome.error.model_dump(mode="json") if outcome.error else None,
        )
    )
    fanout = publisher()
    if fanout:
        fanout.result(outcome)
        for event in outcome.events:
            fanout.event(event)


def _result_from_exception(task: Any, kwargs: Any, exception: BaseException | None) -> Result:
    ids = identify(task.request, kwargs)
    return Result.failed(job_id=ids["job_id"], step_id=ids["step_id"], handler=task.name.split(".")[1],
                         action=ids["action"], error=ErrorInfo.of(exception))


def _bounded(data: dict[str, Any], limit: int = 20) -> dict[str, Any]:
    """Keep the registry row small: query rows are capped, the Result on SNS keeps them whole."""
    if isinstance(data.get("rows"), list) and len(data["rows"]) > limit:
        return {**data, "rows": data["rows"][:limit], "rows_recorded": limit}
    return data
