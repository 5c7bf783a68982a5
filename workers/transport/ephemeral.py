"""SQS queues standing in for AMQP auto-delete queues: deleted, with their SNS subscriptions,
when their channel or connection closes or their process exits (see the package docstring, item 5).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

#: SQS tag keys on ephemeral queues: their expiry (as AMQP ``x-expires``, in
#: seconds) and when their consumer last showed it was alive (Unix time).
TAG_EXPIRES = "pudato:expires-s"
TAG_ALIVE = "pudato:alive-at"
#: How often a consumer refreshes its queue's keep-alive tag, and the least
#: time a queue may go without it before another process deletes it (a worker
#: whose event loop a task blocks, as the solo pool does, stops refreshing).
KEEPALIVE_S = 60.0
MIN_EXPIRY_S = 5 * KEEPALIVE_S
#: SQS keeps a message at least 60 s: the floor for an ephemeral queue's TTL.
MIN_RETENTION_S = 60

_MISSING_QUEUE = ("NonExistentQueue", "QueueDoesNotExist")
_MISSING_SUBSCRIPTION = ("NotFound", "InvalidParameter")


def _is_missing(exc: ClientError, codes: tuple[str, ...]) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return any(c in code for c in codes)


@dataclass(eq=False)
class _Ephemeral:
    """An SQS queue standing in for an AMQP auto-delete queue."""

    name: str  # kombu's name; SQS's is channel.canonical_queue_name(name)
    url: str
    sqs: Any  # clients to delete it with, usable after its channel closed
    channel_id: int
    pid: int = field(default_factory=os.getpid)
    sns: Any = None
    subscriptions: set[str] = field(default_factory=set)
    touched: float = field(default_factory=time.monotonic)
    dropped: bool = False

    def drop(self) -> None:
        """Unsubscribe and delete the queue. Only its own process may: forked children inherit the record."""
        if self.dropped or self.pid != os.getpid():
            self.dropped = True
            _live.discard(self)
            return
        self.dropped = True
        _live.discard(self)
        for arn in self.subscriptions:
            try:
                self.sns.unsubscribe(SubscriptionArn=arn)
            except ClientError as exc:
                if not _is_missing(exc, _MISSING_SUBSCRIPTION):
                    log.warning("could not unsubscribe %s: %s", arn, exc)
            except BotoCoreError as exc:
                log.warning("could not unsubscribe %s: %s", arn, exc)
        try:
            self.sqs.delete_queue(QueueUrl=self.url)
        except ClientError as exc:
            if not _is_missing(exc, _MISSING_QUEUE):
                log.warning("could not delete the ephemeral queue %s: %s", self.url, exc)
                return
        except BotoCoreError as exc:
            log.warning("could not delete the ephemeral queue %s: %s", self.url, exc)
            return
        log.debug("deleted the ephemeral queue %s and %d subscription(s)", self.url, len(self.subscriptions))


#: This process's ephemeral queues not yet deleted, for the exit.
_live: set[_Ephemeral] = set()


def track(entry: _Ephemeral) -> None:
    _live.add(entry)


@atexit.register
def _at_exit() -> None:
    # Flower's event receiver runs in a daemon thread that never closes its connection,
    # and `celery inspect` exits without closing its pool: clean up after them.
    for entry in list(_live):
        try:
            entry.drop()
        except Exception:  # exiting anyway
            log.debug("could not delete %s at exit", entry.url, exc_info=True)
