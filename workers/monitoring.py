"""Celery's remote control, with queue names SQS can live with.

The app uses :class:`Control` (``Celery(control="workers.monitoring:Control")``);
the transport (``workers/transport.py``) does the broadcasting. Remote control
makes two kinds of ephemeral queues, and SQS refuses to create a queue under a
name deleted less than 60 seconds before (``QueueDeletedRecently``), so neither
name may come back:

* A worker's mailbox, ``<hostname>.celery.pidbox`` in kombu, is named per
  process here: a worker restarted within a minute could otherwise not
  re-create it, and its remote-control step would fail to start.
* A client's reply queue, ``<oid>.reply.celery.pidbox``: kombu derives the oid
  from the process, thread and the mailbox object's ``id()``, which Python
  reuses, so one process re-created deleted reply queues (Flower inspects every
  few seconds). Here every call gets its own.

Both are deleted when they are done with (see the transport). Only the names
change: the messages, and a worker's answer to a client, are kombu's.
"""

from __future__ import annotations

from typing import Any

from celery.app.control import Control as CeleryControl
from kombu import Queue
from kombu.pidbox import Mailbox as KombuMailbox
from kombu.utils.uuid import uuid

#: The longest SQS queue name.
SQS_NAME_MAX = 80


class Mailbox(KombuMailbox):
    def __call__(self, connection: Any) -> Mailbox:
        bound: Mailbox = super().__call__(connection)
        # A fresh reply queue for every call (kombu 5.7.0's oid_from reuses id()s).
        bound._oid = uuid()
        bound.__dict__.pop("reply_queue", None)
        return bound

    @property
    def oid(self) -> str:
        oid: str = self.__dict__.setdefault("_oid", uuid())
        return oid

    def get_queue(self, hostname: str) -> Queue:
        queue: Queue = super().get_queue(hostname)
        # The hostname is only a label: a worker picks its commands out of the broadcast by the
        # destination in the message. The token makes the name unique to this worker process.
        suffix = f".{uuid()[:12]}.{self.namespace}.pidbox"
        queue.name = f"{hostname[: SQS_NAME_MAX - len(suffix)]}{suffix}"
        return queue


class Control(CeleryControl):
    Mailbox = Mailbox
