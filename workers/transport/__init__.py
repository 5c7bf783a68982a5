"""Kombu's SQS transport, with broadcast through SNS for Celery's monitoring.

Celery's events (``celery events``, Flower) and remote control (``celery
inspect``, Flower's worker pages) need broadcast: every monitor gets every
event, every worker gets every control command. kombu 5.7's SQS transport can
broadcast a *fanout* exchange through an SNS topic (transport option
``supports_fanout``, kombu PR #2372 for issue #2335), but on its own Celery
still cannot use it. This transport, named in ``celeryconfig.broker_transport``
(``workers.transport:Transport``), mends that:

1. It declares fanout among its exchange types when ``supports_fanout`` is on,
   so the worker starts its remote-control consumer (Celery includes that step
   only if ``supports_exchange_type('fanout')``; kombu 5.7's SQS transport
   still lists ``direct`` only).
2. The exchanges named in the ``fanout_exchanges`` option (Celery's event
   exchange ``celeryev``) are broadcast through SNS whatever type they are
   declared with. Celery declares ``celeryev`` as a *topic* exchange on every
   broker but redis and gcpubsub (``celery.events.event.get_exchange``, the
   "quick hack for Issue #436"), and a topic exchange on a virtual transport
   routes through bindings kept in each process's memory, so events never
   left the worker. Flower builds its own ``EventReceiver``, so this cannot be
   fixed in the Celery app: it has to be the transport.
3. A remote-control reply (exchange ``reply.<app>.pidbox``, routing key the
   client's id) goes to the queue ``<routing key>.<exchange>``, the name
   ``kombu.pidbox.Mailbox.get_reply_queue`` gives it. The worker's connection
   does not know the client's binding, so kombu's lookup found no queue and
   dropped every reply (celery/celery#3197 "Can't inspect SQS workers"). A
   reply whose queue is gone is dropped instead of re-creating the queue,
   which is how late replies leaked ``*-reply-celery-pidbox`` queues
   (celery/celery#8348).
4. A no-ack consumer drained outside the worker's event loop (Celery's event
   receiver, the inspect reply queue) deletes what it receives with a plain
   ``DeleteMessageBatch``. kombu 5.7 deletes through the asynchronous client,
   which needs the worker's hub and fails without one with ``'NoneType' object
   has no attribute ...`` (same cause as celery/kombu#746).
5. Queues declared ``auto_delete`` or ``exclusive`` (the event receivers'
   ``celeryev.<id>``, the workers' ``<host>...celery.pidbox``, the reply
   queues) are *ephemeral*: created with a short retention, tagged with their
   expiry, kept alive by their consumer, and deleted, with their SNS
   subscriptions, when the channel that declared them closes, when the
   connection closes, or when the process exits. SQS has no auto-delete or
   ``x-expires``, so before this every monitoring session left its queues and
   subscriptions behind. One that a killed process leaves behind is swept by
   the next process that binds a queue to the same exchange, once its
   keep-alive tag is older than its expiry.
6. Events are published in the background, in ``PublishBatch`` calls of up to
   ten messages, so that a worker's event loop never waits for SNS and a busy
   worker makes a tenth of the calls (option ``fanout_publish_interval``).
   Broadcasts that are not events (control commands) are published at once.
7. ``_delete`` drops the queue's URL from the cache under its SQS name; kombu
   5.7 pops the Celery name, so a deleted queue's URL was reused (the same
   ``_delete`` that celery/kombu#2091 made actually delete the queue).

8. A poll that SQS did not answer (moto or the network away) reads as an
   empty poll, and the queue is polled again with exponential backoff, instead
   of ending the worker with ``AttributeError("'list' object has no attribute
   'get'")`` from kombu's ``_on_messages_ready`` (see the comment there).

Each of these is a workaround for kombu 5.7.0 / Celery 5.7.0; see the comments
where they are made. With ``supports_fanout`` off (``PUDATO_BROKER__MONITORING
=false``) nothing is broadcast: Celery makes no worker mailbox and events stay
in the process that sends them.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu
from kombu.transport import SQS

from workers.transport.channel import Channel
from workers.transport.ephemeral import _Ephemeral
from workers.transport.publisher import publisher

log = logging.getLogger(__name__)

#: The kombu release these workarounds were written against and checked with. Each one
#: patches private behaviour; on another release they may silently do the wrong thing.
KOMBU_VERSION = "5.7.0"
if kombu.__version__ != KOMBU_VERSION:
    raise ImportError(
        f"workers.transport was written for kombu {KOMBU_VERSION}, and kombu {kombu.__version__} is installed: "
        "check each workaround in workers/transport/ against the new release, then update KOMBU_VERSION"
    )


class Transport(SQS.Transport):
    """``workers.transport:Transport``: see the module's docstring."""

    Channel = Channel
    implements: Any  # kombu's capability record, extended below

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        if options.get("supports_fanout"):
            # kombu 5.7.0's SQS transport lists 'direct' only, so Celery never starts the
            # worker's remote-control consumer (celery/worker/consumer/control.py include_if).
            self.implements = self.implements.extend(exchange_type=frozenset(["direct", "topic", "fanout"]))
        self.publisher = publisher(float(options.get("fanout_publish_interval", 0.5)))
        self._ephemeral: dict[str, _Ephemeral] = {}
        self._cleanup_clients: dict[str, Any] = {}

    def close_connection(self, connection: Any) -> None:
        self.publisher.close(timeout=2.0)
        if self.publisher.messages:
            log.info("published %d event message(s) to SNS in %d PublishBatch call(s)",
                     self.publisher.messages, self.publisher.calls)
        try:
            super().close_connection(connection)
        finally:
            self.drop_ephemeral()

    def drop_ephemeral(self) -> None:
        """Delete this connection's ephemeral queues and their subscriptions."""
        while self._ephemeral:
            _, entry = self._ephemeral.popitem()
            entry.drop()
