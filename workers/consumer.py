"""The worker's consumer, with rejected messages recorded in the registry.

Celery logs and drops a message it cannot decode, one for an unknown task, or
one whose body is not a task at all. Pudato records each such message, with
the reason, in ``rejected_messages``, so a bad producer shows up in the
registry and not only in a worker's log. The worker keeps consuming.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from pudato.registry.repository import Registry
from pudato.settings import get_settings

log = logging.getLogger(__name__)
_EXCERPT = 500


class PudatoConsumer(Consumer):
    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        self._record(message, f"message body could not be decoded ({message.content_type}): {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._record(message, "message is not a Celery task message (no task name in its headers)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        name = (message.headers or {}).get("task")
        self._record(message, f"unknown task {name!r}: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        self._record(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)

    def _record(self, message: Any, reason: str) -> None:
        info = message.delivery_info or {}
        queue = info.get("routing_key")
        body = message.body
        head = body[:_EXCERPT]
        excerpt = head.decode("utf-8", "backslashreplace") if isinstance(head, bytes) else str(body)[:_EXCERPT]
        # SQS hands a message back until it is deleted: key it by its id so that it is recorded once.
        message_id = (info.get("sqs_message") or {}).get("MessageId")
        try:
            Registry(get_settings().registry.url).record_rejected(
                queue, reason, excerpt, self.hostname, key=f"sqs:{message_id}" if message_id else None)
        except Exception:  # the registry being away must not stop consumption
            log.exception("could not record a rejected message: %s", reason)
