"""Pipelines kept in the analysts' logic repository, run pinned to one commit.

A pipeline file, ``pipelines/<name>.yml`` in the logic repository, names its
steps in order; a ``parallel`` block fans out, and the step after it waits for
all of the block (a chord)::

    name: la_revenue
    steps:
      - name: load
        parallel:
          - {name: load_a, handler: table, action: load, payload: {table: a, key: raw/a.csv}}
          - {name: load_b, handler: table, action: load, payload: {table: b, key: raw/b.csv}}
      - {name: build, handler: transform, action: build, payload: {}}

:func:`submit` resolves the ref to a full SHA *before* anything is sent, reads the
pipeline from that commit, and pins every step of the job to it. :func:`rerun`
runs a recorded job again, at its recorded SHA or at the ref's current head, on
its inputs as they were (each at its recorded version) or as they are today.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pudato import jobs, reruns
from pudato.backends.logic import logic_backend
from pudato.errors import InvalidCommand, NotFound, VersionGone
from pudato.handler_specs import spec as handler_spec
from pudato.handlers.base import describe_validation_error
from pudato.inline import ELIDED
from pudato.protocol import InputPin
from pudato.registry.repository import Registry
from pudato.settings import Settings, get_settings

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineStep(_Strict):
    name: str | None = None
    handler: str
    action: str
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("handler")
    @classmethod
    def _known_handler(cls, value: str) -> str:
        return handler_spec(value).name


class ParallelBlock(_Strict):
    name: str | None = None
    parallel: list[PipelineStep] = Field(min_length=1)


class Schedule(_Strict):
    """When beat runs the pipeline: a crontab line or an interval, on a ref's head."""

    cron: str | None = None
    every_s: float | None = Field(default=None, gt=0)
    ref: str = "main"


class Pipeline(_Strict):
    name: str
    description: str | None = None
    schedule: Schedule | None = None
    steps: list[PipelineStep | ParallelBlock] = Field(min_length=1)

    def to_node(self) -> jobs.Node:
        nodes: list[jobs.Node] = []
        for entry in self.steps:
            if isinstance(entry, ParallelBlock):
                nodes.append(jobs.group(*[_step(s) for s in entry.parallel]))
            elif nodes and isinstance(nodes[-1], jobs.Group):
                nodes[-1] = jobs.chord(nodes[-1].parts, _step(entry))
            else:
                nodes.append(_step(entry))
        return nodes[0] if len(nodes) == 1 else jobs.chain(*nodes)


def _step(entry: PipelineStep) -> jobs.Step:
    return jobs.Step(entry.handler, entry.action, dict(entry.payload), entry.name)


def load(checkout: Path, name: str) -> Pipeline:
    """Read ``pipelines/<name>.yml`` from a checkout; the name comes from a user, so it is checked."""
    if not _NAME.match(name) or ".." in name:
        raise InvalidCommand(f"pipeline name {name!r} must be letters, digits, '_', '.', '-'", pipeline=name)
    for suffix in (".yml", ".yaml"):
        path = checkout / "pipelines" / f"{name}{suffix}"
        if path.is_file():
            break
    else:
        raise NotFound(f"pipeline {name!r} not found: no pipelines/{name}.yml in the logic repository", pipeline=name)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidCommand(f"pipeline file pipelines/{path.name} is not valid YAML: {exc}") from None
    try:
        return Pipeline.model_validate(document)
    except ValidationError as exc:
        raise InvalidCommand(describe_validation_error(exc, f"pipeline file pipelines/{path.name}")) from None


def submit(
    name: str,
    repo: str,
    ref: str,
    *,
    settings: Settings | None = None,
    before: list[jobs.Node] | None = None,
    trigger: str = "cli",
    app: Any = None,
) -> jobs.SubmittedJob:
    """Resolve ``ref`` to a SHA, read the pipeline at that SHA, submit it pinned to it."""
    settings = settings or get_settings()
    logic = logic_backend(settings)
    sha = logic.resolve(repo, ref)
    pipeline = load(logic.checkout(repo, sha).path, name)
    node = pipeline.to_node()
    if before:
        node = jobs.chain(*before, node)
    return jobs.submit(node, name=pipeline.name, trigger=trigger, settings=settings, app=app,
                       logic_repo=repo, logic_ref=ref, logic_version=sha)


def rerun(
    job_id: str,
    *,
    latest: bool = False,
    latest_data: bool = False,
    settings: Settings | None = None,
    app: Any = None,
) -> jobs.SubmittedJob:
    """Run a recorded job again with its recorded steps and parameters.

    Code: the recorded SHA by default; with ``latest``, the current head of the
    recorded ref. Data: every input from outside the job at its recorded version
    by default (:mod:`pudato.reruns`); with ``latest_data``, today's. The new job
    names the old one as its parent. A pinned version that is gone fails the new
    job before any step is sent (:class:`~pudato.errors.VersionGone`).
    """
    settings = settings or get_settings()
    job = Registry(settings.registry.url).job(job_id)
    if not job.get("canvas"):
        raise InvalidCommand(f"job {job_id} has no recorded canvas to re-run", job_id=job_id)
    sha = job.get("logic_version")
    if latest:
        if not job.get("logic_repo") or not job.get("logic_ref"):
            raise InvalidCommand(f"job {job_id} was not run from a logic repository ref; --latest needs one")
        sha = logic_backend(settings).resolve(job["logic_repo"], job["logic_ref"])
    pins = {} if latest_data else reruns.pins_by_step(job)
    node = from_description(job["canvas"], pins)
    options: dict[str, Any] = {
        "name": job.get("name"), "settings": settings, "parent_job_id": job_id,
        "trigger": "rerun" + ("-latest" if latest else "") + ("-latest-data" if latest_data else ""),
        "logic_repo": job.get("logic_repo"), "logic_ref": job.get("logic_ref"), "logic_version": sha,
    }
    try:
        reruns.check([pin for step in pins.values() for pin in step], settings)
    except VersionGone as exc:
        refused = jobs.record_refused(node, exc, **options)
        exc.details["job_id"] = refused
        exc.message += f" (the rerun is recorded as failed job {refused}; nothing was sent)"
        raise
    return jobs.submit(node, app=app, **options)


def from_description(document: dict[str, Any], pins: dict[str, list[InputPin]] | None = None) -> jobs.Node:
    """Rebuild a canvas from :func:`pudato.jobs.describe`'s JSON, with fresh step ids.

    ``pins`` maps a described (old) step id to the inputs the new step reads at their recorded versions.
    """
    pins = pins or {}
    if "handler" in document:
        elided = (document.get("payload") or {}).get(ELIDED)
        if elided:
            raise InvalidCommand(
                f"step {document.get('step') or document['handler']} sent inline content the registry kept only as "
                f"sha256 and size ({elided}); it cannot be sent again: put the data in storage and pass its key",
                step=document.get("step_id"),
            )
        return jobs.Step(document["handler"], document["action"], dict(document.get("payload") or {}),
                         document.get("step"), pinned_inputs=list(pins.get(document.get("step_id") or "", [])))
    if "chord" in document:
        return jobs.chord([from_description(p, pins) for p in document["chord"]],
                          from_description(document["body"], pins))
    if "chain" in document:
        return jobs.chain(*[from_description(p, pins) for p in document["chain"]])
    if "group" in document:
        return jobs.group(*[from_description(p, pins) for p in document["group"]])
    raise InvalidCommand(f"unrecognised canvas description with keys {sorted(document)}")
