"""The registry's tables. Alembic migrations in ``migrations/versions`` create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Job(Base):
    """A submitted chain, group or chord, or a single ``.delay()`` step."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    step_count: Mapped[int] = mapped_column(Integer, default=1)
    trigger: Mapped[str] = mapped_column(String(64), default="api")
    parent_job_id: Mapped[str | None] = mapped_column(String(64))
    canvas: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    logic_repo: Mapped[str | None] = mapped_column(Text)
    logic_ref: Mapped[str | None] = mapped_column(String(255))
    logic_version: Mapped[str | None] = mapped_column(String(64))
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Step(Base):
    """One handler task of a job: what it was asked, what it read and wrote, how it went."""

    __tablename__ = "steps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    name: Mapped[str | None] = mapped_column(String(200))
    handler: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    task_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[float | None] = mapped_column(Float)
    inputs: Mapped[list[Any] | None] = mapped_column(JSON)
    outputs: Mapped[list[Any] | None] = mapped_column(JSON)
    executions: Mapped[list[Any] | None] = mapped_column(JSON)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    logic_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker: Mapped[str | None] = mapped_column(String(200))
    retries: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Every attempt's events in order: started, retried, lost, finished (with worker and time).
    history: Mapped[list[Any] | None] = mapped_column(JSON)


class StepDataset(Base):
    """Lineage edges: a step read (``input``) or wrote (``output``) a dataset."""

    __tablename__ = "step_datasets"
    __table_args__ = (Index("ix_step_datasets_dataset", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[str] = mapped_column(ForeignKey("steps.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    namespace: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(1024))
    facets: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LineageEdge(Base):
    """Dataset-to-dataset lineage: ``source`` went into ``target`` in one step.

    A step's outputs derive from all of its inputs, unless an output names the
    datasets it derives from in its ``derived_from`` facet (dbt models do: a mart
    derives from its own upstream models and sources, not from the whole run's).
    """

    __tablename__ = "lineage_edges"
    __table_args__ = (
        Index("ix_lineage_edges_source", "source_namespace", "source_name"),
        Index("ix_lineage_edges_target", "target_namespace", "target_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[str] = mapped_column(ForeignKey("steps.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(64))
    source_namespace: Mapped[str] = mapped_column(String(255))
    source_name: Mapped[str] = mapped_column(String(1024))
    target_namespace: Mapped[str] = mapped_column(String(255))
    target_name: Mapped[str] = mapped_column(String(1024))
    logic_version: Mapped[str | None] = mapped_column(String(64))


class Dataset(Base):
    """The catalog: every dataset a step wrote, plus what people registered by hand."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("namespace", "name", name="uq_datasets_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(1024))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[Any] | None] = mapped_column(JSON)
    facets: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_step_id: Mapped[str | None] = mapped_column(String(64))
    last_job_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


class DatasetDrift(Base):
    """One load of a release: its drift against the dataset and its validation counts, even when it failed."""

    __tablename__ = "dataset_drift"
    __table_args__ = (Index("ix_dataset_drift_dataset", "namespace", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[str] = mapped_column(ForeignKey("steps.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    drifted: Mapped[bool] = mapped_column(Boolean, default=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    recorded_at: Mapped[datetime | None]


class RejectedMessage(Base):
    """A message no task could run (not JSON, not decodable, an unknown task, forged ids),
    or a step record the database refused. Recorded once: ``message_key`` names the message."""

    __tablename__ = "rejected_messages"
    __table_args__ = (UniqueConstraint("message_key", name="uq_rejected_messages_message_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text)
    body_excerpt: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    # sha256 of what identifies the message (its SQS message id, or the refused record's task).
    message_key: Mapped[str | None] = mapped_column(String(64))


class ResultEntry(Base):
    """Celery's result backend store: task results, group results and chord counters."""

    __tablename__ = "celery_results"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    counter: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None]


class Schedule(Base):
    """A job beat submits on a cron or an interval; its run times survive beat restarts."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), default="cli")  # cli | config | pipeline
    target: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"pipeline", "repo", "ref"} or {"step": {...}}
    cron: Mapped[str | None] = mapped_column(String(120))
    every_s: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    last_slot: Mapped[datetime | None]
    last_job_id: Mapped[str | None] = mapped_column(String(64))
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None]


class BeatLease(Base):
    """Who may run the schedules: one beat holds the lease, others stand by until it expires."""

    __tablename__ = "beat_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class LineageLink(Base):
    """One dataset-to-dataset link, whatever number of steps made it: the graph lineage queries walk.

    ``lineage_edges`` grows with every run; this table grows only with the graph
    (a pipeline run for the thousandth time adds no row, it updates ``last_*`` and
    ``runs``). A recursive query over it costs the same at 10k or 1M steps.
    """

    __tablename__ = "lineage_links"
    __table_args__ = (
        UniqueConstraint("target_namespace", "target_name", "source_namespace", "source_name",
                         name="uq_lineage_links_pair"),
        Index("ix_lineage_links_source", "source_namespace", "source_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_namespace: Mapped[str] = mapped_column(String(255))
    source_name: Mapped[str] = mapped_column(String(1024))
    target_namespace: Mapped[str] = mapped_column(String(255))
    target_name: Mapped[str] = mapped_column(String(1024))
    step_id: Mapped[str] = mapped_column(String(64))  # the latest step that made the link
    job_id: Mapped[str] = mapped_column(String(64))
    logic_version: Mapped[str | None] = mapped_column(String(64))
    first_seen_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    runs: Mapped[int] = mapped_column(Integer, default=1)


def as_dict(row: Any) -> dict[str, Any]:
    """A mapped row as a plain dict of its columns."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}
