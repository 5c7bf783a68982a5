"""Celery events published to SNS from a thread, in PublishBatch calls (package docstring, item 6)."""

from __future__ import annotations

import atexit
import logging
import os
import queue as queue_module
import threading
import time
import weakref
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pudato.sns_batch import BATCH_BYTES, BATCH_ENTRIES, batches

log = logging.getLogger(__name__)


class BatchPublisher:
    """Publishes SNS messages from a thread, up to ten per PublishBatch call.

    A message waits at most ``interval`` seconds for others to share its call.
    It is per process: a forked child starts its own thread on first use.
    """

    _STOP = object()

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.calls = 0  # PublishBatch calls made (read by the benchmark)
        self.messages = 0

    def submit(self, client: Any, topic_arn: str, body: str, attributes: dict[str, Any] | None) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue_module.SimpleQueue()
                    self._thread = threading.Thread(target=self._run, args=(self._queue,),
                                                    name="sns-batch-publisher", daemon=True)
                    self._pid = os.getpid()
                    self._thread.start()
        self._queue.put((client, topic_arn, body, attributes))

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is waiting, then stop the thread."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        self._queue.put(self._STOP)
        thread.join(timeout)
        self._thread, self._pid = None, 0

    def _run(self, inbox: queue_module.SimpleQueue[Any]) -> None:
        stopping = False
        while not stopping:
            item = inbox.get()
            if item is self._STOP:
                return
            batch, size = [item], len(item[2])
            deadline = time.monotonic() + self.interval
            while len(batch) < BATCH_ENTRIES:
                try:
                    item = inbox.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue_module.Empty:
                    break
                if item is self._STOP:
                    stopping = True
                    break
                if size + len(item[2]) > BATCH_BYTES:
                    self._publish(batch)
                    batch, size = [], 0
                batch.append(item)
                size += len(item[2])
            self._publish(batch)

    def _publish(self, batch: list[tuple[Any, str, str, dict[str, Any] | None]]) -> None:
        by_topic: dict[tuple[int, str], list[tuple[Any, str, str, dict[str, Any] | None]]] = {}
        for item in batch:
            by_topic.setdefault((id(item[0]), item[1]), []).append(item)
        for items in by_topic.values():
            client, topic_arn = items[0][0], items[0][1]
            for entries in batches((body, attributes) for _, _, body, attributes in items):
                self._publish_entries(client, topic_arn, entries)

    def _publish_entries(self, client: Any, topic_arn: str, entries: list[dict[str, Any]]) -> None:
        try:
            response = client.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        except (ClientError, BotoCoreError) as exc:  # events are best effort, like Celery's own
            log.warning("could not publish %d event message(s) to %s: %s", len(entries), topic_arn, exc)
            return
        self.calls += 1
        self.messages += len(entries)
        if response.get("Failed"):
            log.warning("SNS refused %d event message(s): %s", len(response["Failed"]), response["Failed"][:3])


#: This process's publishers, flushed at exit.
_publishers: weakref.WeakSet[BatchPublisher] = weakref.WeakSet()


def publisher(interval: float) -> BatchPublisher:
    made = BatchPublisher(interval)
    _publishers.add(made)
    return made


@atexit.register
def _at_exit() -> None:
    for each in list(_publishers):
        each.close(timeout=2.0)
