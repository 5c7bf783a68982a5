"""Queue depths and dead-letter queues: what operators scale on and re-drive from.

``depths`` reads SQS's approximate counters for every handler queue and its DLQ
(the backlog per worker is the signal to autoscale on). ``dead_letters`` peeks
at a DLQ without consuming it; ``replay`` moves its messages back to the queue.
"""

from __future__ import annotations

import json
from typing import Any

from pudato import aws
from pudato.errors import InvalidCommand
from pudato.protocol import HANDLERS
from pudato.settings import Settings

_COUNTERS = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def _url(sqs: Any, name: str) -> str:
    url: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return url


def _counts(sqs: Any, url: str) -> dict[str, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(_COUNTERS.values()))["Attributes"]
    return {label: int(attributes.get(name, 0)) for label, name in _COUNTERS.items()}


def depths(settings: Settings) -> list[dict[str, Any]]:
    sqs = aws.client("sqs", settings.aws)
    rows = []
    for handler in HANDLERS:
        counts = _counts(sqs, _url(sqs, settings.queue_name(handler)))
        dead = _counts(sqs, _url(sqs, settings.dead_letter_queue_name(handler)))
        dead_letters = dead["visible"] + dead["in_flight"]
        rows.append({"queue": settings.queue_name(handler), **counts, "dead_letters": dead_letters})
    return rows


def _handler_of(settings: Settings, queue: str) -> str:
    for handler in HANDLERS:
        if queue in (handler, settings.queue_name(handler)):
            return handler
    raise InvalidCommand(f"unknown queue {queue!r}; known: {', '.join(settings.queue_name(h) for h in HANDLERS)}")


def dead_letters(settings: Settings, queue: str, limit: int = 10) -> list[dict[str, Any]]:
    """Peek at a DLQ: messages become visible again right away (visibility 0)."""
    sqs = aws.client("sqs", settings.aws)
    url = _url(sqs, settings.dead_letter_queue_name(_handler_of(settings, queue)))
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(max(1, limit // 10 + 1)):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=2,
                                       AttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
        for message in messages:
            seen.setdefault(message["MessageId"], _describe(message))
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
        if not messages or len(seen) >= limit:
            break
    return list(seen.values())[:limit]


def replay(settings: Settings, queue: str, limit: int = 1000) -> int:
    """Move messages from a queue's DLQ back to the queue; returns how many moved."""
    sqs = aws.client("sqs", settings.aws)
    handler = _handler_of(settings, queue)
    source = _url(sqs, settings.dead_letter_queue_name(handler))
    target = _url(sqs, settings.queue_name(handler))
    moved = 0
    while moved < limit:
        messages = sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                       WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        for message in messages:
            send: dict[str, Any] = {"QueueUrl": target, "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                send["MessageAttributes"] = message["MessageAttributes"]
            sqs.send_message(**send)
            sqs.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def _describe(message: dict[str, Any]) -> dict[str, Any]:
    """The task name, ids and command of a Celery message on SQS, as far as it can be read."""
    import base64

    described: dict[str, Any] = {"message_id": message["MessageId"],
                                 "receive_count": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0))}
    try:
        envelope = json.loads(base64.b64decode(message["Body"]))
        headers = envelope.get("headers", {})
        body = json.loads(base64.b64decode(envelope["body"])) if envelope.get("body") else None
        described.update(task=headers.get("task"), task_id=headers.get("id"), job_id=headers.get("pudato_job_id"))
        if isinstance(body, list) and len(body) >= 2 and isinstance(body[1], dict):
            described["command"] = body[1].get("command")
    except (ValueError, KeyError, TypeError):
        described["body_excerpt"] = message["Body"][:200]
    return described
