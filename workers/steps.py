"""The shared body of every handler task: Command in, Result out.

A task module only names its handler::

    execute = handler_task(app, "storage")

The handler is built once per worker process, after the fork. A failed step
raises :class:`StepFailed`, which carries the whole :class:`Result`, so Celery
stops the chain or chord, and the signals record and publish the Result.
Transient failures (a service away, a lock held) are retried with backoff.
"""

from __future__ import annotations

import importlib
from typing import Any

from celery import Celery, Task

from pudato import deadline
from pudato.errors import InvalidCommand, TerminalError
from pudato.handler_specs import spec
from pudato.handlers.base import Handler, parse_command
from pudato.protocol import ErrorInfo, Result
from pudato.settings import get_settings
from workers.identity import identify

MAX_TRANSIENT_RETRIES = 3


class StepFailed(TerminalError):
    """A step's Result says it failed. ``details['result']`` holds that Result as JSON."""


class CommandRefused(TerminalError):
    """The command claims a job or step without the platform's signature (workers.identity): not run."""


class HandlerTask(Task):
    Request = "workers.request:PudatoRequest"
    handler_path: str = ""
    _handler: Handler | None = None

    @property
    def handler(self) -> Handler:
        if self._handler is None:
            module_name, _, class_name = self.handler_path.partition(":")
            self._handler = getattr(importlib.import_module(module_name), class_name)()
        return self._handler


def run_step(task: HandlerTask, command: Any) -> dict[str, Any]:
    if command is None:
        raise InvalidCommand("message carries no 'command' keyword argument")
    ids = identify(task.request, {"command": command})
    if ids["refused"]:
        raise CommandRefused(ids["refused"])
    if isinstance(command, dict):
        handler = task.name.split(".")[1]
        command = {"handler": handler, **command, "job_id": ids["job_id"], "step_id": ids["step_id"]}
    parsed = parse_command(command)
    handler = task.name.split(".")[1]
    setting = f"PUDATO_BROKER__QUEUES__{handler.upper()}__SOFT_TIME_LIMIT_S"
    soft_limit_s = get_settings().broker.queues[handler].soft_time_limit_s
    with deadline.step_deadline(soft_limit_s, setting, ahead_s=min(1.0, soft_limit_s / 10)):
        result = task.handler.execute(parsed)
        if result.error is not None and stopped_by_soft_limit(result.error):
            # Celery's soft limit, raised inside the handler: say which limit, and where it is set.
            result = result.model_copy(update={"error": ErrorInfo.of(deadline.exceeded())})
    if result.status == "failed":
        assert result.error is not None
        if result.error.kind == "transient" and task.request.retries < MAX_TRANSIENT_RETRIES:
            raise task.retry(countdown=2 ** task.request.retries, exc=_failure(result))
        raise _failure(result)
    return result.model_dump(mode="json")


def stopped_by_soft_limit(error: ErrorInfo) -> bool:
    if error.type == "SoftTimeLimitExceeded":
        return True
    # The soft limit's signal, arriving while DuckDB waits (on a locked lake catalog, say), makes DuckDB
    # abandon the statement with its own "interrupted" error, and Celery's exception is lost with it.
    left = deadline.remaining()
    return "interrupted" in error.message.lower() and left is not None and left <= 0


def _failure(result: Result) -> StepFailed:
    assert result.error is not None
    return StepFailed(
        f"{result.handler}.{result.action} failed: {result.error.type}: {result.error.message}",
        result=result.model_dump(mode="json"),
    )


def handler_task(app: Celery, handler: str) -> Any:
    """Define ``pudato.<handler>.execute`` on ``app``, bound to the handler class its spec names."""

    def execute(self: HandlerTask, *upstream: Any, command: Any = None) -> dict[str, Any]:
        # ``upstream`` holds a parent's result when a caller links a mutable signature;
        # Pudato's own jobs use immutable ones, and a step's inputs come from its payload.
        return run_step(self, command)

    execute.__name__ = f"{handler}_execute"
    execute.__doc__ = f"Run one {handler} command: ``execute.delay(command={{'action': ..., 'payload': ...}})``."
    # Both limits stay below the queue's visibility timeout (pudato.settings.QueueSettings): a task
    # is settled before SQS could hand its message to a second worker, so no step runs twice at once.
    queue = get_settings().broker.queues[handler]
    return app.task(
        bind=True, base=HandlerTask, name=spec(handler).task_name, handler_path=spec(handler).handler_class,
        acks_late=True, soft_time_limit=queue.soft_time_limit_s, time_limit=queue.time_limit_s,
    )(execute)
