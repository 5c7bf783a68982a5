"""Deliver OpenLineage events off the task path, in order, and lose none to an outage.

The step recorder's drain hands every update it wrote to :meth:`LineageEmitter.observe`
(so an event never describes a step the registry does not know). The emitter reads
the job from the registry, builds the events (:mod:`pudato.lineage.events`) and
queues them on a drain of its own. That drain sends them through the transport the
OpenLineage client configures (``openlineage.yml``, ``OPENLINEAGE_*``: http, file,
console, ...). A receiver that is down or answers 5xx is waited out with backoff;
at shutdown what is left is spooled, and the next worker sends it first. A 4xx
answer is the event's fault and is logged and dropped, so one bad event cannot
block the rest.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.serde import Serde
from openlineage.client.transport import Transport

from pudato.background import Drain
from pudato.lineage.events import JobContext, job_event, step_event
from pudato.registry.database import session_scope
from pudato.registry.models import Job as JobRow
from pudato.registry.repository import Registry, StepUpdate

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Wait out a receiver that is away or overloaded; drop what it refuses."""
    import requests

    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 500
        return status >= 500 or status in (408, 429)
    return isinstance(exc, (requests.RequestException, OSError, RuntimeError))


def to_json(event: RunEvent) -> dict[str, Any]:
    return Serde.to_dict(event)


def from_json(data: dict[str, Any]) -> RunEvent:
    """A spooled event back as a RunEvent; facets stay plain JSON, which the transports send as they are."""
    run, job = data["run"], data["job"]
    return RunEvent(
        eventType=RunState(data["eventType"]),
        eventTime=data["eventTime"],
        run=Run(runId=run["runId"], facets=run.get("facets") or {}),
        job=Job(namespace=job["namespace"], name=job["name"], facets=job.get("facets") or {}),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"], facets=d.get("facets") or {},
                             inputFacets=d.get("inputFacets") or {}) for d in data.get("inputs") or []],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"], facets=d.get("facets") or {},
                               outputFacets=d.get("outputFacets") or {}) for d in data.get("outputs") or []],
        producer=data["producer"],
    )


class LineageEmitter:
    """Turns recorded step updates into OpenLineage events and sends them from a background drain."""

    def __init__(
        self, registry: Registry, namespace: str, spool_dir: Path | None, transport: Transport | None = None
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self._transport = transport
        self.drain = Drain(
            "openlineage",
            self._deliver,
            is_transient=is_transient,
            encode=to_json,
            decode=from_json,
            spool_dir=spool_dir,
            max_backoff_s=2.0,
        )

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            from openlineage.client import OpenLineageClient

            self._transport = OpenLineageClient().transport
        return self._transport

    def observe(self, update: StepUpdate, job_finished: str | None) -> None:
        """Queue the events one written update means; called on the recorder's drain thread."""
        if update.event not in ("started", "finished"):
            return  # a retry or a lost attempt is not a run state
        job = self._job(update.job_id)
        if update.event == "started" and job.started_at is not None and job.job_id != update.step_id \
                and _same_moment(job.started_at, update.at):
            # This update started the job (the registry's roll-up stamped its time on it).
            self.drain.put(job_event(job, self.namespace, None, update.started_at or update.at))
        event = step_event(update, job, self.namespace)
        if event is not None:
            self.drain.put(event)
        if job_finished and job.job_id != update.step_id:
            self.drain.put(job_event(job, self.namespace, job_finished, job.finished_at or update.at))

    def _job(self, job_id: str) -> JobContext:
        with session_scope(self.registry.url) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return JobContext(job_id=job_id)
            return JobContext(job_id=row.id, name=row.name, logic_repo=row.logic_repo,
                              logic_version=row.logic_version, started_at=row.started_at,
                              finished_at=row.finished_at)  # fmt: skip

    def _deliver(self, events: list[RunEvent]) -> None:
        while events:
            self.transport.emit(events[0])
            events.pop(0)  # only once sent: a retry resumes at the first unsent event


def _same_moment(a: datetime, b: datetime) -> bool:
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return a == b
