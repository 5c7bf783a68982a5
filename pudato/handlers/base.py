"""What every handler shares: action dispatch, payload validation, and Result building.

A handler is a plain class. Each action is a method decorated with
:func:`action`, which names the action and the pydantic model of its payload::

    class StorageHandler(Handler):
        name = "storage"

        @action("head", HeadPayload)
        def head(self, payload: HeadPayload) -> Outcome: ...

An action that needs the step's identity (job id, logic repository and
version) declares a second parameter and receives the :class:`Command`.

:meth:`Handler.execute` never raises for a bad command or a failing action: the
error lands in the returned :class:`~pudato.protocol.Result`, so a worker keeps
running and the registry records why the step failed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pudato.errors import InvalidCommand, PudatoError
from pudato.protocol import Command, ErrorInfo, Outcome, Result, utcnow

log = logging.getLogger(__name__)

P = TypeVar("P", bound=BaseModel)
ActionMethod = Callable[..., Outcome]  # (self, payload) or (self, payload, command)


class Payload(BaseModel):
    """Base of every action's payload: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def action(name: str, payload_model: type[Payload]) -> Callable[[ActionMethod], ActionMethod]:
    def mark(method: ActionMethod) -> ActionMethod:
        method.__dict__["__pudato_action__"] = (name, payload_model)
        return method

    return mark


def describe_validation_error(exc: ValidationError, what: str) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or what
        # A validator's own ValueError reads as pydantic's "Value error, <ours>": keep ours.
        problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return f"invalid {what}: " + "; ".join(problems)


def parse_command(raw: Any) -> Command:
    """Turn a message body (dict or JSON text) into a Command, or raise InvalidCommand."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InvalidCommand(f"command is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidCommand(
            f"command must be a JSON object, got {type(raw).__name__}", got=type(raw).__name__
        )
    try:
        return Command.model_validate(raw)
    except ValidationError as exc:
        raise InvalidCommand(describe_validation_error(exc, "command")) from None


class PingPayload(Payload):
    pass


class Handler:
    """Base class: subclasses set ``name`` and decorate their actions.

    Every handler answers ``ping``: a step that does no work, for health checks
    through the whole path (queue, worker, signals, registry, fan-out) and for
    measuring that path's own cost.
    """

    name: ClassVar[str]
    _actions: ClassVar[dict[str, tuple[str, type[Payload]]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._actions = {}
        for attribute in dir(cls):
            marker = getattr(getattr(cls, attribute), "__pudato_action__", None)
            if marker:
                cls._actions[marker[0]] = (attribute, marker[1])

    @action("ping", PingPayload)
    def ping(self, payload: PingPayload) -> Outcome:
        return Outcome(data={"pong": self.name})

    @classmethod
    def action_names(cls) -> list[str]:
        return sorted(cls._actions)

    def execute(self, command: Command) -> Result:
        started_at = utcnow()
        clock = time.perf_counter()
        try:
            outcome = self._dispatch(command)
        except PudatoError as exc:
            error = ErrorInfo.of(exc, with_details=True)
            # A failure may still carry what was done before it (the dbt nodes that ran).
            partial = exc.outcome if isinstance(exc.outcome, Outcome) else Outcome()
            return self._result(command, started_at, clock, partial, error)
        except Exception as exc:  # an engine or driver error we did not classify
            log.exception("%s.%s failed", self.name, command.action)
            return self._result(command, started_at, clock, Outcome(), ErrorInfo.of(exc))
        return self._result(command, started_at, clock, outcome, None)

    def _dispatch(self, command: Command) -> Outcome:
        if command.handler != self.name:
            raise InvalidCommand(
                f"command for handler {command.handler!r} was sent to the {self.name!r} handler"
            )
        try:
            method_name, payload_model = self._actions[command.action]
        except KeyError:
            raise InvalidCommand(
                f"unknown action {command.action!r} for the {self.name} handler; "
                f"known actions: {', '.join(self.action_names())}",
                action=command.action,
            ) from None
        try:
            payload = payload_model.model_validate(command.payload)
        except ValidationError as exc:
            raise InvalidCommand(
                describe_validation_error(exc, f"payload for {self.name}.{command.action}")
            ) from None
        method = getattr(self, method_name)
        outcome: Outcome = method(payload, command) if method.__code__.co_argcount > 2 else method(payload)
        return outcome

    def _result(
        self,
        command: Command,
        started_at: Any,
        clock: float,
        outcome: Outcome,
        error: ErrorInfo | None,
    ) -> Result:
        elapsed = time.perf_counter() - clock
        return Result(
            job_id=command.job_id,
            step_id=command.step_id,
            handler=self.name,
            action=command.action,
            status="failed" if error else "succeeded",
            started_at=started_at,
            finished_at=started_at + _seconds(elapsed),
            inputs=outcome.inputs,
            outputs=outcome.outputs,
            executions=outcome.executions,
            data=outcome.data,
            events=[
                e.model_copy(update={"job_id": command.job_id, "step_id": command.step_id}) for e in outcome.events
            ],
            logic_version=outcome.logic_version or command.logic_version,
            error=error,
        )


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)

