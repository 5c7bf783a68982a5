"""Fan out Results and Events to SNS, off the task's critical path.

Each message carries attributes (``type``, ``handler``, ``status``, ``job_id``)
so that subscribers can filter with SNS filter policies.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pudato import aws
from pudato.background import Drain
from pudato.protocol import Event, Result
from pudato.settings import Settings
from pudato.sns_batch import BATCH_BYTES, batches, string_attributes

log = logging.getLogger(__name__)
# SNS takes 256 KiB per message and per PublishBatch call; leave room for attributes.
_MESSAGE_MAX = BATCH_BYTES


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in {"Throttling", "ThrottlingException", "InternalError", "ServiceUnavailable"}
    return isinstance(exc, BotoCoreError)


def topic_arn(sns: Any, name: str) -> str:
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page["Topics"]:
            if topic["TopicArn"].rsplit(":", 1)[-1] == name:
                arn: str = topic["TopicArn"]
                return arn
    raise LookupError(f"SNS topic {name!r} does not exist; run `pudato infra up`")


class Publisher:
    """Publishes to the results and events topics through a background drain."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sns: Any = None
        self._arns: dict[str, str] = {}
        self.drain = Drain("sns", self._send, is_transient=_is_transient, batch_size=10)

    def result(self, result: Result) -> None:
        attributes = {"type": "result", "handler": result.handler, "status": result.status,
                      "job_id": result.job_id or ""}
        self.drain.put((self.settings.fanout.results_topic, fit_for_sns(result), attributes))

    def event(self, event: Event) -> None:
        attributes = {"type": event.type, "job_id": event.job_id or ""}
        self.drain.put((self.settings.fanout.events_topic, event.model_dump_json(), attributes))

    def _send(self, batch: list[tuple[str, str, dict[str, str]]]) -> None:
        if self._sns is None:
            self._sns = aws.client("sns", self.settings.aws)
        by_topic: dict[str, list[tuple[str, dict[str, str]]]] = {}
        for topic, body, attributes in batch:
            by_topic.setdefault(topic, []).append((body, attributes))
        for topic, messages in by_topic.items():
            arn = self._arns.get(topic) or self._arns.setdefault(topic, topic_arn(self._sns, topic))
            for entries in batches((body, string_attributes(attributes)) for body, attributes in messages):
                response = self._sns.publish_batch(TopicArn=arn, PublishBatchRequestEntries=entries)
                if response.get("Failed"):
                    log.error("SNS refused %d message(s) for %s: %s", len(response["Failed"]), topic,
                              json.dumps(response["Failed"])[:500])
            # Forget what was sent, so a retry after a later topic's failure does not send it twice.
            batch[:] = [item for item in batch if item[0] != topic]


def fit_for_sns(result: Result) -> str:
    """The Result as JSON, with bulky parts left out when it would not fit in one SNS message.

    The registry keeps the step whole; subscribers that need the rows read them there.
    """
    body = result.model_dump_json()
    if len(body.encode()) <= _MESSAGE_MAX:
        return body
    slim = result.model_copy(update={
        "data": {"omitted": "too large for SNS; the registry has this step's data",
                 "keys": sorted(result.data)},
        "executions": [e.model_copy(update={"statement": e.statement[:2000]}) for e in result.executions[:50]],
    })
    return slim.model_dump_json()
