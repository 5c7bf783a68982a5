"""Step records, written off the task's critical path and never lost to an outage.

The Celery signals hand each :class:`StepUpdate` to a :class:`StepRecorder`.
Each update is journalled to disk (:mod:`pudato.journal`) before ``record``
returns, so before the task's message is acknowledged; its drain thread writes
them in order, and while the database is away it waits and tries again. An
update whose process died before it was written (a SIGKILLed pool process) is
written by the next process of that host to find it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from pudato.background import Drain
from pudato.journal import Journal
from pudato.registry.repository import Registry, StepUpdate

JobFinished = Callable[[StepUpdate, str], None]


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, DisconnectionError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class StepRecorder:
    def __init__(self, registry: Registry, spool_dir: Path | None, on_job_finished: JobFinished | None = None) -> None:
        self.registry = registry
        self.on_job_finished = on_job_finished
        journal = Journal(spool_dir, "step-records", _encode, StepUpdate.model_validate) if spool_dir else None
        self.drain = Drain(
            "step-records",
            self._write,
            is_transient=is_outage,
            encode=_encode,
            decode=StepUpdate.model_validate,
            spool_dir=spool_dir,
            max_backoff_s=2.0,
            journal=journal,
        )

    def record(self, update: StepUpdate) -> None:
        self.drain.put(update)

    def _write(self, updates: list[StepUpdate]) -> None:
        while updates:
            # Pop only after the write committed, so a retry resumes at the first unwritten one.
            finished = self.registry.apply(updates[0])
            update = updates.pop(0)
            if finished and self.on_job_finished:
                self.on_job_finished(update, finished)


def _encode(update: StepUpdate) -> dict[str, object]:
    return update.model_dump(mode="json")
