"""The worker's task request, with lost attempts and dead-lettering recorded.

When a pool process dies mid-task (SIGKILL, out of memory), Celery requeues
the message (``task_reject_on_worker_lost``) without a signal, so the registry
would never hear of the attempt. This request records it. SQS counts every
receive; once a message has been received ``max_receive_count`` times, the
queue's redrive policy moves it to the dead-letter queue instead of delivering
it again, so the step is failed here with that reason.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request

from pudato.protocol import ErrorInfo, Result
from pudato.registry.repository import StepUpdate
from pudato.settings import get_settings
from workers import signals
from workers.identity import identify

log = logging.getLogger(__name__)


class PudatoRequest(Request):
    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)
        if isinstance(exc, WorkerLostError) and self.task.name.startswith("pudato."):
            try:
                self._record_lost(exc)
            except Exception:  # recording must never break the consumer
                log.exception("could not record a lost attempt of %s", self.id)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft and self.task.name.startswith("pudato."):
            try:
                self._record_hard_timeout(timeout)
            except Exception:  # recording must never break the consumer
                log.exception("could not record the hard time limit of %s", self.id)
        super().on_timeout(soft, timeout)

    def _record_hard_timeout(self, timeout: float) -> None:
        handler = self.task.name.split(".")[1]
        ids = identify(self, self.kwargs)
        if ids["refused"]:
            return
        error = ErrorInfo(type="LimitExceeded", kind="terminal", message=(
            f"the step ran past its hard time limit of {timeout:g} s and its process was killed "
            f"(PUDATO_BROKER__QUEUES__{handler.upper()}__TIME_LIMIT_S)"))
        signals.record_result(self, Result.failed(job_id=ids["job_id"], step_id=ids["step_id"], handler=handler,
                                                  action=ids["action"], error=error))

    def _record_lost(self, exc: BaseException) -> None:
        handler = self.task.name.split(".")[1]
        settings = get_settings()
        # Request.delivery_info keeps only the AMQP fields; the SQS message is on the kombu message.
        raw = (self.message.delivery_info or {}) if self.message is not None else {}
        receives = int(raw.get("sqs_message", {}).get("Attributes", {}).get("ApproximateReceiveCount", 0))
        limit = settings.broker.queues[handler].max_receive_count
        ids = identify(self, self.kwargs)
        if ids["refused"]:
            return
        base = {"step_id": ids["step_id"], "job_id": ids["job_id"], "handler": handler, "action": ids["action"],
                    "task_id": self.id, "worker": self.hostname}
        reason = f"worker lost during receive {receives} of {limit}: {exc}"
        signals.recorder().record(
            StepUpdate(event="lost", error={"type": "WorkerLostError", "message": reason}, **base)
        )
        if receives and receives >= limit:
            dlq = settings.dead_letter_queue_name(handler)
            error = ErrorInfo(
                type="DeadLettered",
                kind="terminal",
                message=f"{reason}; the message moved to {dlq} (replay with `pudato dlq replay {handler}`)",
            )
            result = Result.failed(
                job_id=ids["job_id"], step_id=ids["step_id"], handler=handler, action=ids["action"], error=error
            )
            signals.record_result(self, result)
