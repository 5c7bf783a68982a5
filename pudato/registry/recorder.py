"""Step records, written off the task's critical path and never lost to an outage.

The Celery signals hand each :class:`StepUpdate` to a :class:`StepRecorder`.
Each update is journalled to disk (:mod:`pudato.journal`) before ``record``
returns, so before the task's message is acknowledged; its drain thread writes
them in order, and while the database is away it waits and tries again. An
update whose process died before it was written (a SIGKILLed pool process) is
written by the next process of that host to find it.

An update the database refuses (a value too long, a step of another job) is
recorded in ``rejected_messages`` with the reason, once, and the updates after
it are written as usual: one bad record never takes its batch with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from pudato.background import Drain
from pudato.journal import Journal
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
            update = updates[0]
            finished, written = None, False
            if update.event == "refused":
                self._reject(update, (update.error or {}).get("message") or "command refused")
            else:
                try:
                    finished, written = self.registry.apply(update), True
                except Exception as exc:
                    if is_outage(exc):
                        raise
                    log.warning("step record of %s refused by the registry: %s", update.step_id, exc)
                    self._reject(update, f"step record refused by the registry: {type(exc).__name__}: {exc}")
            updates.pop(0)
            if written and self.on_written:
                try:
                    self.on_written(update, finished)
                except Exception:  # never write the update twice because a listener failed
                    log.exception("a listener failed on the update of step %s", update.step_id)
            if finished and self.on_job_finished:
                self.on_job_finished(update, finished)

    def _reject(self, update: StepUpdate, reason: str) -> None:
        excerpt = json.dumps(update.model_dump(mode="json", exclude_none=True))
        # Keyed by task: a message (its started and finished records, its redeliveries) is recorded once.
        key = f"step-record:{update.task_id or update.step_id}"
        self.registry.record_rejected(f"pudato-{update.handler}", reason, excerpt, update.worker, key=key)


def _encode(update: StepUpdate) -> dict[str, object]:
    return update.model_dump(mode="json")
