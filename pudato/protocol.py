"""The messages Pudato passes around, as pydantic models that round-trip through JSON.

* :class:`Command`: what a step is asked to do (handler, action, payload, ids).
* :class:`Result`: what a step did: status, inputs, outputs, executions, error.
* :class:`Event`: something that happened (object created, table loaded, job finished).
* :class:`DataReference`: a dataset named by :mod:`pudato.datasets`.
* :class:`ExecutionRecord`: a statement an engine ran on the step's behalf.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from pudato.errors import PudatoError
from pudato.handler_specs import HANDLERS, spec, task_name

__all__ = ["HANDLERS", "JOB_HEADER", "task_name"]

# The Celery message header that carries a step's job id through chains and chords.
JOB_HEADER = "pudato_job_id"
StepStatus = Literal["pending", "running", "succeeded", "failed"]
# Job and step ids: what the registry's id columns hold (64 characters), nothing a shell or a path could misread.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MAX_STEP_NAME = 200


def find_nul(value: Any, where: str = "command") -> str | None:
    """The path of the first string in ``value`` that holds a NUL character (PostgreSQL text cannot)."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_nul(key, f"{where} key") or find_nul(item, f"{where}.{key}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{where}[{index}]")
            if found:
                return found
    return None


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataReference(_Model):
    """A dataset: OpenLineage namespace + name, and facts about this version of it."""

    namespace: str
    name: str
    facets: dict[str, Any] = Field(default_factory=dict)

    @property
    def uri(self) -> str:
        separator = "" if self.namespace == "file" else "/"
        prefix = "file://" if self.namespace == "file" else self.namespace
        return f"{prefix}{separator}{self.name}"

    def same_dataset(self, other: DataReference) -> bool:
        return (self.namespace, self.name) == (other.namespace, other.name)


class InputPin(_Model):
    """A dataset a step must read at one recorded version (an exact rerun's inputs).

    ``version`` is what the storage or warehouse backend names a version by: an
    S3 version id, a lake snapshot id, or for local files (which keep no versions)
    the modification time; ``sha256`` lets a backend without versions check that
    the bytes it still has are the recorded ones.
    """

    namespace: str
    name: str
    version: str | None = None
    sha256: str | None = None

    def label(self) -> str:
        return f"{DataReference(namespace=self.namespace, name=self.name).uri} at version {self.version}"


class ExecutionRecord(_Model):
    """A statement an engine ran for the step (SQL, a dbt invocation, ...)."""

    engine: str
    statement: str
    started_at: datetime
    duration_ms: float
    rows: int | None = None


class ErrorInfo(_Model):
    type: str
    message: str
    kind: Literal["terminal", "transient", "error"] = "error"
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, exc: BaseException | None, with_details: bool = False) -> ErrorInfo:
        """What a Result says about ``exc``: a Pudato error keeps its own message and kind."""
        if isinstance(exc, PudatoError):
            details = json.loads(json.dumps(exc.details, default=str)) if with_details else {}
            return cls(type=type(exc).__name__, message=exc.message, kind=exc.kind, details=details)
        return cls(type=type(exc).__name__, message=str(exc) or repr(exc))


class Command(_Model):
    """One step's instruction to a handler."""

    handler: str
    action: str = Field(min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)
    job_id: Id | None = None
    step_id: Id = Field(default_factory=new_id)
    step_name: str | None = Field(default=None, max_length=MAX_STEP_NAME)
    # The analysts' logic repository and the full commit SHA the job is pinned to.
    logic_repo: str | None = None
    logic_version: str | None = Field(default=None, max_length=64)
    # An exact rerun's pins: these inputs are read at these versions. Empty: read today's data.
    pinned_inputs: list[InputPin] = Field(default_factory=list)
    # The platform's HMAC over the fields above (pudato.signing): set by pudato.jobs, checked by workers.
    signature: str | None = Field(default=None, max_length=128)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, raw: Any) -> Any:
        where = find_nul(raw, "")
        if where:
            raise ValueError(f"{where.lstrip('.') or 'the command'} contains a NUL character")
        return raw

    def pin_for(self, dataset: DataReference) -> InputPin | None:
        """The pinned version of ``dataset``, if this step reads it at one."""
        for pin in self.pinned_inputs:
            if (pin.namespace, pin.name) == (dataset.namespace, dataset.name):
                return pin
        return None

    @field_validator("handler")
    @classmethod
    def _known_handler(cls, value: str) -> str:
        return spec(value).name


class Result(_Model):
    """What one step did. Published to SNS and recorded in the registry."""

    job_id: str | None
    step_id: str
    handler: str
    action: str
    status: Literal["succeeded", "failed"]
    started_at: datetime
    finished_at: datetime
    inputs: list[DataReference] = Field(default_factory=list)
    outputs: list[DataReference] = Field(default_factory=list)
    executions: list[ExecutionRecord] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    logic_version: str | None = None
    error: ErrorInfo | None = None

    @property
    def duration_ms(self) -> float:
        return (self.finished_at - self.started_at).total_seconds() * 1000

    @classmethod
    def failed(
        cls, *, job_id: str | None, step_id: str, handler: str, action: str, error: ErrorInfo
    ) -> Result:
        """The Result of a step that failed outside its handler (a lost worker, a crash before dispatch)."""
        now = utcnow()
        return cls(job_id=job_id, step_id=step_id, handler=handler, action=action, status="failed",
                   started_at=now, finished_at=now, error=error)


class Event(_Model):
    """Something that happened, fanned out on the events topic."""

    type: str
    at: datetime = Field(default_factory=utcnow)
    job_id: str | None = None
    step_id: str | None = None
    dataset: DataReference | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Outcome(_Model):
    """What a handler action returns; the handler wraps it into a :class:`Result`."""

    inputs: list[DataReference] = Field(default_factory=list)
    outputs: list[DataReference] = Field(default_factory=list)
    executions: list[ExecutionRecord] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    # The commit that actually ran (a checkout's HEAD), which wins over the command's.
    logic_version: str | None = None


Result.model_rebuild()
