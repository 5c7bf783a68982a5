"""Step records, written off the task's critical path and never lost to an outage.

The Celery signals hand each :class:`StepUpdate` to a :class:`StepRecorder`. Its
drain thread writes them in order; while the database is away it waits and
tries again, and at shutdown it spools what is left to disk for the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from pudato.background import Drain
from pudato.registry.repository import Registry, StepUpdate

log = logging.getLogger(__name__)

JobFinished = Callable[[StepUpdate, str], None]
# Told of every update once written, with the job's status if it finished the job (OpenLineage).
Written = Callable[[StepUpdate, str | None], None]


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, (OperationalError, DisconnectionError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class StepRecorder:
    def __init__(
        self,
        registry: Registry,
        spool_dir: Path | None,
        on_job_finished: JobFinished | None = None,
        on_written: Written | None = None,
    ) -> None:
        self.registry = registry
        self.on_job_finished = on_job_finished
        self.on_written = on_written
        self.drain = Drain(
            "step-records",
            self._write,
            is_transient=is_outage,
            encode=lambda update: update.model_dump(mode="json"),
            decode=StepUpdate.model_validate,
            spool_dir=spool_dir,
            max_backoff_s=2.0,
        )

    def record(self, update: StepUpdate) -> None:
        self.drain.put(update)

    def _write(self, updates: list[StepUpdate]) -> None:
        while updates:
            # Pop only after the write committed, so a retry resumes at the first unwritten one.
            finished = self.registry.apply(updates[0])
            update = updates.pop(0)
            if self.on_written:
                try:
                    self.on_written(update, finished)
                except Exception:  # never write the update twice because a listener failed
                    log.exception("a listener failed on the update of step %s", update.step_id)
            if finished and self.on_job_finished:
                self.on_job_finished(update, finished)
