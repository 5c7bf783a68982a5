"""Submit jobs: a chain, group or chord of handler steps, with ids carried everywhere.

::

    from pudato import jobs

    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", key="raw/a.csv", source="a.csv"),
            jobs.step("table", "load", table="a", key="raw/a.csv"),
            jobs.step("query", "run", sql="select count(*) from a"),
        ),
        name="load a",
    )
    jobs.wait(job.job_id)

Every step's command carries the job id and its own step id, so each task of
the canvas (chord header and body included) knows both. The job and its steps
are written to the registry as ``pending`` before anything is sent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pudato.errors import BackendUnavailable, ConfigurationError, InvalidCommand, NotFound, PudatoError
from pudato.inline import check_payload_size
from pudato.protocol import HANDLERS, JOB_HEADER, Command, InputPin, new_id, utcnow
from pudato.registry.repository import TERMINAL, Registry, StepPlan, StepUpdate
from pudato.settings import Settings, get_settings
from pudato.signing import platform_key, sign

# The message header that carries the job id onto everything a task publishes.


@dataclass
class Step:
    handler: str
    action: str
    payload: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    step_id: str = field(default_factory=new_id)
    # An exact rerun's inputs at their recorded versions (see pudato.reruns); empty reads today's data.
    pinned_inputs: list[InputPin] = field(default_factory=list)


@dataclass
class Chain:
    parts: list[Node]


@dataclass
class Group:
    parts: list[Node]


@dataclass
class Chord:
    header: list[Node]
    body: Node


Node = Step | Chain | Group | Chord


@dataclass
class SubmittedJob:
    job_id: str
    steps: list[Step]
    async_result: Any = None


def step(handler: str, action: str, name: str | None = None, **payload: Any) -> Step:
    if handler not in HANDLERS:
        raise InvalidCommand(f"unknown handler {handler!r}; known: {', '.join(HANDLERS)}", handler=handler)
    return Step(handler, action, payload, name)


def chain(*parts: Node) -> Chain:
    return Chain(list(parts))


def group(*parts: Node) -> Group:
    return Group(list(parts))


def chord(header: list[Node], body: Node) -> Chord:
    return Chord(list(header), body)


def steps_of(node: Node) -> list[Step]:
    if isinstance(node, Step):
        return [node]
    if isinstance(node, Chord):
        return [s for part in node.header for s in steps_of(part)] + steps_of(node.body)
    return [s for part in node.parts for s in steps_of(part)]


def describe(node: Node) -> dict[str, Any]:
    """The canvas as JSON, kept with the job so that it can be shown and re-run."""
    if isinstance(node, Step):
        return {"step": node.name, "step_id": node.step_id, "handler": node.handler, "action": node.action,
                "payload": node.payload}
    if isinstance(node, Chord):
        return {"chord": [describe(p) for p in node.header], "body": describe(node.body)}
    kind = "chain" if isinstance(node, Chain) else "group"
    return {kind: [describe(p) for p in node.parts]}


def submit(
    node: Node,
    *,
    name: str | None = None,
    trigger: str = "api",
    settings: Settings | None = None,
    app: Any = None,
    logic_repo: str | None = None,
    logic_ref: str | None = None,
    logic_version: str | None = None,
    parent_job_id: str | None = None,
) -> SubmittedJob:
    """Record the job and its steps as pending, then send the canvas.

    ``logic_version`` must already be a full commit SHA (``pudato.logic`` resolves
    refs at submission); every step of the job runs that commit.
    """
    settings = settings or get_settings()
    app = app or _current_app()
    for planned_step in steps_of(node):  # before anything is recorded: a refused job leaves no trace
        check_payload_size(planned_step.name or f"{planned_step.handler}.{planned_step.action}", planned_step.payload)
    job_id, planned = _record(node, settings, name=name, trigger=trigger, parent_job_id=parent_job_id,
                              logic_repo=logic_repo, logic_ref=logic_ref, logic_version=logic_version)
    pin = {"logic_repo": logic_repo, "logic_version": logic_version}
    try:
        canvas = _signature(app, node, job_id, pin, platform_key(settings))
        async_result = canvas.apply_async(headers={JOB_HEADER: job_id})
    except Exception as exc:  # the broker refused the message: the job must not stay pending
        error = exc if isinstance(exc, PudatoError) else BackendUnavailable(f"could not send the job: {exc}")
        _fail_steps(settings, job_id, planned, error, prefix="not sent")
        raise error from exc
    return SubmittedJob(job_id, planned, async_result)


def record_refused(node: Node, error: PudatoError, *, settings: Settings | None = None, **job: Any) -> str:
    """Record a job that was refused before any step was sent: every step failed with ``error``.

    Takes :func:`submit`'s keywords; returns the job id. Nothing is sent, so nothing is written.
    """
    settings = settings or get_settings()
    job_id, planned = _record(node, settings, **job)
    _fail_steps(settings, job_id, planned, error, prefix="not run")
    return job_id


def _fail_steps(settings: Settings, job_id: str, planned: list[Step], error: PudatoError, prefix: str) -> None:
    registry = Registry(settings.registry.url)
    now = utcnow()
    failure = {"type": type(error).__name__, "message": f"{prefix}: {error.message}", "kind": error.kind,
               "details": json.loads(json.dumps(error.details, default=str))}
    for step in planned:
        registry.apply(StepUpdate(event="finished", step_id=step.step_id, job_id=job_id, handler=step.handler,
                                  action=step.action, status="failed", started_at=now, finished_at=now,
                                  duration_ms=0.0, error=failure))


def _record(node: Node, settings: Settings, *, name: str | None = None, trigger: str = "api",
            parent_job_id: str | None = None, logic_repo: str | None = None, logic_ref: str | None = None,
            logic_version: str | None = None) -> tuple[str, list[Step]]:
    job_id = new_id()
    planned = steps_of(node)
    for step_ in planned:  # refused here, whole, rather than by the database or a worker
        _validate(step_, job_id)
    Registry(settings.registry.url).create_job(
        job_id,
        [
            StepPlan(step_id=s.step_id, handler=s.handler, action=s.action, name=s.name, payload=s.payload,
                     position=i)
            for i, s in enumerate(planned)
        ],
        name=name,
        trigger=trigger,
        canvas=describe(node),
        parent_job_id=parent_job_id,
        logic_repo=logic_repo,
        logic_ref=logic_ref,
        logic_version=logic_version,
    )
    return job_id, planned


def _validate(step_: Step, job_id: str) -> None:
    try:
        Command.model_validate({"handler": step_.handler, "action": step_.action, "payload": step_.payload,
                                "job_id": job_id, "step_id": step_.step_id, "step_name": step_.name})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'command'}: {e['msg']}" for e in exc.errors())
        raise InvalidCommand(f"step {step_.name or step_.step_id} is invalid: {problems}",
                             step=step_.name or step_.step_id) from None


def _current_app() -> Any:
    """The app a worker or the CLI loaded (``workers.app``): never Celery's unconfigured default."""
    from celery import current_app

    if current_app.main != "pudato":
        raise ConfigurationError("no Pudato Celery app is loaded: import workers.app first, or pass app=")
    return current_app


def _signature(app: Any, node: Node, job_id: str, pin: dict[str, str | None], key: bytes) -> Any:
    from celery import chain as celery_chain
    from celery import chord as celery_chord
    from celery import group as celery_group

    if isinstance(node, Step):
        command: dict[str, Any] = {
            "handler": node.handler,
            "action": node.action,
            "payload": node.payload,
            "job_id": job_id,
            "step_id": node.step_id,
            "step_name": node.name,
            **pin,
        }
        if node.pinned_inputs:
            command["pinned_inputs"] = [p.model_dump(mode="json") for p in node.pinned_inputs]
        command["signature"] = sign(command, key)
        return app.signature(
            f"pudato.{node.handler}.execute", kwargs={"command": command}, immutable=True,
            task_id=node.step_id,
        )
    if isinstance(node, Chain):
        return celery_chain(*[_signature(app, p, job_id, pin, key) for p in node.parts])
    if isinstance(node, Group):
        return celery_group(*[_signature(app, p, job_id, pin, key) for p in node.parts])
    return celery_chord(
        [_signature(app, p, job_id, pin, key) for p in node.header],
        _signature(app, node.body, job_id, pin, key),
    )


def wait(job_id: str, timeout: float = 120.0, settings: Settings | None = None, poll: float = 0.1) -> dict[str, Any]:
    """Poll the registry until the job succeeded or failed; return the job with its steps."""
    registry = Registry((settings or get_settings()).registry.url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = registry.job(job_id)
            if job["status"] in TERMINAL and all(s["status"] != "running" for s in job["steps"]):
                return job
        except NotFound:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f}s")
        time.sleep(poll)
