"""The registry's API: jobs, steps, lineage edges and the dataset catalog.

Writers call :meth:`Registry.create_job` (when a job is submitted) and
:meth:`Registry.apply` (for each step update the Celery signals produce).
A job's status is rolled up from its steps every time one of them changes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pudato.errors import NotFound
from pudato.inline import recorded_canvas, recorded_payload
from pudato.protocol import DataReference, utcnow
from pudato.registry.catalog import DatasetRecords
from pudato.registry.database import session_scope
from pudato.registry.drift import record_drift
from pudato.registry.links import Pair, upsert_links
from pudato.registry.models import Dataset, Job, LineageEdge, RejectedMessage, Step, StepDataset, as_dict

TERMINAL = ("succeeded", "failed")
UpdateEvent = Literal["started", "finished", "retried", "lost", "refused"]
EXCERPT_CHARS = 500


class RecordRefused(ValueError):
    """A step update that names a step of another job, or a job it is no step of."""


def clean_text(text: str | None, limit: int) -> str | None:
    """``text`` as PostgreSQL can hold it: NUL escaped, at most ``limit`` characters."""
    return None if text is None else text.replace("\x00", "\\x00")[:limit]


class StepPlan(BaseModel):
    """A step as planned at submission, before any worker has seen it."""

    step_id: str
    handler: str
    action: str
    name: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    position: int = 0


class StepUpdate(BaseModel):
    """One change to a step, as a signal saw it. ``None`` fields leave the record alone."""

    event: UpdateEvent
    step_id: str
    job_id: str
    handler: str
    action: str
    at: datetime = Field(default_factory=utcnow)
    task_id: str | None = None
    worker: str | None = None
    name: str | None = None
    payload: dict[str, Any] | None = None
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    inputs: list[DataReference] | None = None
    outputs: list[DataReference] | None = None
    executions: list[dict[str, Any]] | None = None
    data: dict[str, Any] | None = None
    logic_version: str | None = None
    error: dict[str, Any] | None = None


def rollup(statuses: list[str], step_count: int) -> str:
    if "failed" in statuses:
        return "failed"
    if len(statuses) >= step_count and all(s == "succeeded" for s in statuses):
        return "succeeded"
    if any(s in ("running", "succeeded") for s in statuses):
        return "running"
    return "pending"


class Registry(DatasetRecords):
    """Reads and writes the registry database at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    # -- writing -------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        steps: list[StepPlan],
        *,
        name: str | None = None,
        trigger: str = "api",
        canvas: dict[str, Any] | None = None,
        parent_job_id: str | None = None,
        logic_repo: str | None = None,
        logic_ref: str | None = None,
        logic_version: str | None = None,
    ) -> None:
        now = utcnow()
        with session_scope(self.url) as session:
            session.add(
                Job(
                    id=job_id,
                    name=name,
                    status="pending",
                    step_count=len(steps),
                    trigger=trigger,
                    canvas=recorded_canvas(canvas),
                    parent_job_id=parent_job_id,
                    logic_repo=logic_repo,
                    logic_ref=logic_ref,
                    logic_version=logic_version,
                    submitted_at=now,
                )
            )
            session.flush()
            for plan in steps:
                session.add(
                    Step(
                        id=plan.step_id,
                        job_id=job_id,
                        position=plan.position,
                        name=plan.name,
                        handler=plan.handler,
                        action=plan.action,
                        payload=recorded_payload(plan.payload),
                        status="pending",
                        submitted_at=now,
                        retries=0,
                        attempts=0,
                    )
                )

    def apply(self, update: StepUpdate) -> str | None:
        """Write one step update. Returns the job's status when this update finished the job."""
        with session_scope(self.url) as session:
            job = self._lock_job(session, update)
            step = session.get(Step, update.step_id)
            if step is not None and step.job_id != update.job_id:
                raise RecordRefused(f"step {update.step_id} belongs to job {step.job_id}, not to {update.job_id}")
            if step is None and job.trigger != "delay":
                raise RecordRefused(f"step {update.step_id} is not a step of job {update.job_id}")
            if step is None:
                step = Step(
                    id=update.step_id,
                    job_id=update.job_id,
                    handler=update.handler,
                    action=update.action,
                    name=update.name,
                    payload=update.payload,
                    status="pending",
                    position=0,
                    retries=0,
                    attempts=0,
                )
                session.add(step)
            self._merge(step, update)
            session.flush()
            if update.event == "finished" and update.status == "succeeded":
                self._catalog_outputs(session, step)
            if update.event == "finished":
                self._record_edges(session, step)
                record_drift(session, step)
            return self._roll_up(session, job, update.at)

    def record_rejected(self, queue: str | None, reason: str, body_excerpt: str | None, worker: str | None,
                        key: str | None = None) -> None:
        """Record a refused message once: a second one with the same ``key`` (a redelivery) is ignored."""
        values = {
            "queue": clean_text(queue, 255), "reason": clean_text(reason, 4000),
            "body_excerpt": clean_text(body_excerpt, EXCERPT_CHARS), "worker": clean_text(worker, 200),
            "received_at": utcnow(),
            "message_key": hashlib.sha256(key.encode()).hexdigest() if key else None,
        }
        with session_scope(self.url) as session:
            if key is None:
                session.execute(insert(RejectedMessage).values(**values))
                return
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            statement = dialect.insert(RejectedMessage).values(**values)
            session.execute(statement.on_conflict_do_nothing(index_elements=["message_key"]))

    def _lock_job(self, session: Session, update: StepUpdate) -> Job:
        # FOR UPDATE serialises the roll-up of steps that finish at the same moment.
        job = session.execute(select(Job).where(Job.id == update.job_id).with_for_update()).scalar_one_or_none()
        if job is None:  # a plain .delay() step: its job is born with it
            job = Job(id=update.job_id, status="pending", step_count=1, trigger="delay", submitted_at=update.at)
            session.add(job)
            session.flush()
        return job

    @staticmethod
    def _merge(step: Step, update: StepUpdate) -> None:
        entry = {"event": update.event, "at": update.at.isoformat(), "worker": update.worker}
        if update.status:
            entry["status"] = update.status
        if update.error and update.event != "finished":
            entry["error"] = update.error.get("message")
        step.history = [*(step.history or []), entry]  # a new list: JSON columns track assignment
        if update.event == "lost":
            return
        if update.event == "started":
            if step.status == "succeeded" and step.attempts and step.task_id == update.task_id:
                # A redelivered message of a step that already finished: keep the outcome.
                step.attempts += 1
                return
            step.status = "running"
            step.started_at = update.started_at or update.at
            step.finished_at = None
            step.attempts = (step.attempts or 0) + 1
        elif update.event == "retried":
            step.retries = (step.retries or 0) + 1
            step.status = "running"
        for field in ("task_id", "worker", "name", "payload", "status", "finished_at", "duration_ms",
                      "executions", "data", "logic_version", "error"):
            value = getattr(update, field)
            if value is not None and not (update.event == "started" and field == "status"):
                setattr(step, field, recorded_payload(value) if field == "payload" else value)
        if update.inputs is not None:
            step.inputs = [ref.model_dump(mode="json") for ref in update.inputs]
        if update.outputs is not None:
            step.outputs = [ref.model_dump(mode="json") for ref in update.outputs]

    @staticmethod
    def _record_edges(session: Session, step: Step) -> None:
        for old in session.scalars(select(StepDataset).where(StepDataset.step_id == step.id)):
            session.delete(old)
        for old_edge in session.scalars(select(LineageEdge).where(LineageEdge.step_id == step.id)):
            session.delete(old_edge)
        inputs = [(ref["namespace"], ref["name"]) for ref in step.inputs or []]
        pairs: list[Pair] = []
        for output in step.outputs or []:
            derived = (output.get("facets") or {}).get("derived_from")
            sources = [(ref["namespace"], ref["name"]) for ref in derived] if derived is not None else inputs
            for namespace, name in dict.fromkeys(sources):
                pairs.append((namespace, name, output["namespace"], output["name"]))
                session.add(
                    LineageEdge(
                        step_id=step.id, job_id=step.job_id, logic_version=step.logic_version,
                        source_namespace=namespace, source_name=name,
                        target_namespace=output["namespace"], target_name=output["name"],
                    )
                )
        upsert_links(session, pairs, step.id, step.job_id, step.logic_version, step.finished_at or utcnow())
        for direction, refs in (("input", step.inputs or []), ("output", step.outputs or [])):
            for ref in refs:
                session.add(
                    StepDataset(
                        step_id=step.id,
                        direction=direction,
                        namespace=ref["namespace"],
                        name=ref["name"],
                        facets=ref.get("facets"),
                    )
                )

    @staticmethod
    def _catalog_outputs(session: Session, step: Step) -> None:
        now = utcnow()
        for ref in step.outputs or []:
            dataset = session.execute(
                select(Dataset).where(Dataset.namespace == ref["namespace"], Dataset.name == ref["name"])
            ).scalar_one_or_none()
            if dataset is None:
                dataset = Dataset(namespace=ref["namespace"], name=ref["name"], created_at=now, tags=[])
                session.add(dataset)
            dataset.facets = ref.get("facets") or {}
            dataset.last_step_id = step.id
            dataset.last_job_id = step.job_id
            dataset.updated_at = now

    @staticmethod
    def _roll_up(session: Session, job: Job, at: datetime) -> str | None:
        statuses = list(session.scalars(select(Step.status).where(Step.job_id == job.id)))
        before = job.status
        job.status = rollup(statuses, job.step_count)
        if job.status != "pending" and job.started_at is None:
            job.started_at = at
        if job.status in TERMINAL and before not in TERMINAL:
            job.finished_at = at
            return job.status
        return None

    # -- reading -------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        with session_scope(self.url) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id!r} is not in the registry", job_id=job_id)
            steps = session.scalars(select(Step).where(Step.job_id == job_id).order_by(Step.position, Step.started_at))
            return {**as_dict(job), "steps": [as_dict(s) for s in steps]}

    def step(self, step_id: str) -> dict[str, Any] | None:
        with session_scope(self.url) as session:
            step = session.get(Step, step_id)
            return as_dict(step) if step is not None else None

    def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        with session_scope(self.url) as session:
            rows = session.scalars(select(Job).order_by(Job.submitted_at.desc()).limit(limit))
            return [as_dict(j) for j in rows]

    def rejected_messages(self) -> list[dict[str, Any]]:
        with session_scope(self.url) as session:
            return [as_dict(r) for r in session.scalars(select(RejectedMessage).order_by(RejectedMessage.id))]

    def lineage(self, namespace: str, name: str, direction: Literal["upstream", "downstream"]) -> list[dict[str, Any]]:
        """The steps that wrote (upstream) or read (downstream) a dataset, and their other side."""
        wanted = "output" if direction == "upstream" else "input"
        other = "input" if direction == "upstream" else "output"
        with session_scope(self.url) as session:
            edges = session.scalars(
                select(StepDataset).where(
                    StepDataset.namespace == namespace, StepDataset.name == name, StepDataset.direction == wanted
                )
            ).all()
            found = []
            for edge in edges:
                step = session.get(Step, edge.step_id)
                peers = session.scalars(
                    select(StepDataset).where(StepDataset.step_id == edge.step_id, StepDataset.direction == other)
                )
                found.append(
                    {
                        "step_id": edge.step_id,
                        "job_id": step.job_id if step else None,
                        "handler": step.handler if step else None,
                        "action": step.action if step else None,
                        "datasets": [{"namespace": p.namespace, "name": p.name} for p in peers],
                    }
                )
            return found

    def edges(self, namespace: str, name: str, direction: Literal["upstream", "downstream"]) -> list[dict[str, Any]]:
        """One hop of dataset lineage: what went into (upstream) or came out of (downstream) a dataset."""
        if direction == "upstream":
            match = (LineageEdge.target_namespace == namespace, LineageEdge.target_name == name)
        else:
            match = (LineageEdge.source_namespace == namespace, LineageEdge.source_name == name)
        with session_scope(self.url) as session:
            edges = session.scalars(select(LineageEdge).where(*match).order_by(LineageEdge.id))
            return [as_dict(edge) for edge in edges]
