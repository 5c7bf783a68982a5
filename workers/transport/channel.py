"""The SQS channel with SNS broadcast for Celery's events and remote control (package docstring)."""

from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from kombu.transport import SQS
from kombu.transport.SQS.exceptions import DoesNotExistQueueException
from kombu.transport.virtual.base import queue_declare_ok_t
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from kombu.utils.uuid import uuid

from pudato.backoff import delay_for
from workers.transport.ephemeral import (
    _MISSING_QUEUE,
    KEEPALIVE_S,
    MIN_EXPIRY_S,
    MIN_RETENTION_S,
    TAG_ALIVE,
    TAG_EXPIRES,
    _Ephemeral,
    _is_missing,
    track,
)

log = logging.getLogger(__name__)


class Channel(SQS.Channel):
    """SQS channel with SNS broadcast for Celery's events and remote control."""

    # -- options ----------------------------------------------------------------

    @cached_property
    def fanout_exchanges(self) -> frozenset[str]:
        """Exchanges broadcast through SNS whatever type they are declared with."""
        if not self.supports_fanout:
            return frozenset()
        return frozenset(self.transport_options.get("fanout_exchanges") or ())

    @cached_property
    def broadcast_wait_time_seconds(self) -> int:
        """Long-poll wait of queues bound to a fanout exchange: they are idle most of the time."""
        return int(self.transport_options.get("broadcast_wait_time_seconds", self.wait_time_seconds))

    @property
    def _ephemeral(self) -> dict[str, _Ephemeral]:
        ephemeral: dict[str, _Ephemeral] = self.connection._ephemeral
        return ephemeral

    # -- 2. events: broadcast whatever the declared type ------------------------------

    def exchange_declare(self, exchange: str | None = None, type: str = "direct", *args: Any, **kwargs: Any) -> None:
        # Celery declares its event exchange as a topic exchange except on redis and gcpubsub
        # (celery/events/event.py get_exchange, Celery 5.7.0). Remove once Celery asks the
        # transport for the type, or kombu's SQS transport broadcasts topic exchanges.
        if exchange in self.fanout_exchanges:
            type = "fanout"
        super().exchange_declare(exchange, type, *args, **kwargs)

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any) -> None:
        if exchange not in self.fanout_exchanges:  # a control command: publish now
            super()._put_fanout(exchange, message, routing_key, **kwargs)
            return
        properties = message.get("properties", {})
        attributes = self.fanout.serialise_message_attributes(properties.get("message_attributes"))
        self.connection.publisher.submit(
            self.fanout.get_client(exchange), self.fanout._get_or_create_topic(exchange), dumps(message), attributes,
        )
        return None

    # -- 3. remote-control replies ----------------------------------------------------

    @staticmethod
    def _is_reply_exchange(exchange: str | None) -> bool:
        return bool(exchange and exchange.startswith("reply.") and exchange.endswith(".pidbox"))

    def basic_publish(self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if not self._is_reply_exchange(exchange):
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        # The reply queue's binding lives in the client's process only; its name is fixed
        # by kombu.pidbox.Mailbox.get_reply_queue (kombu 5.7.0). Until kombu's SQS transport
        # routes pidbox replies itself (celery/celery#3197), route them by that name.
        self._inplace_augment_message(message, exchange, routing_key)
        queue = f"{routing_key}.{exchange}"
        try:
            self._resolve_queue_url(queue)  # never creates it: the client has gone (celery/celery#8348)
            self._put(queue, message, **kwargs)
        except DoesNotExistQueueException:
            log.debug("dropped a reply to %s: the queue is gone", queue)
        except ClientError as exc:
            if not _is_missing(exc, _MISSING_QUEUE):
                raise
            self._queue_cache.pop(self.canonical_queue_name(queue), None)
            log.debug("dropped a reply to %s: the queue is gone", queue)
        return None

    # -- 4. no-ack consumers outside the event loop --------------------------------------

    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> list[dict[str, Any]]:
        # Only the synchronous path (drain_events: _get_bulk, _get) comes here. kombu 5.7.0's
        # _message_to_python deletes a no-ack message through the asynchronous client, which
        # needs the worker's hub (celery/kombu#746): delete the batch synchronously instead.
        if queue not in self._noack_queues:
            decoded: list[dict[str, Any]] = super()._messages_to_python(messages, queue)
            return decoded
        q_url = self._new_queue(queue)
        payloads = [
            self._prepare_json_payload(bytes_to_str(self._decode_python_message_body(m["Body"]))) for m in messages
        ]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        try:
            self.sqs(queue=self.canonical_queue_name(queue)).delete_message_batch(QueueUrl=q_url, Entries=entries)
        except ClientError as exc:
            log.warning("could not delete %d no-ack message(s) from %s: %s", len(entries), queue, exc)
        return payloads

    # -- 5. ephemeral queues ----------------------------------------------------------

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        if passive or not (kwargs.get("auto_delete") or kwargs.get("exclusive")):
            return super().queue_declare(queue, passive, **kwargs)
        queue = queue or f"amq.gen-{uuid()}"
        if queue in self._ephemeral:
            return queue_declare_ok_t(queue, 0, 0)
        arguments = kwargs.get("arguments") or {}
        ttl_ms, expires_ms = arguments.get("x-message-ttl"), arguments.get("x-expires")
        name = self.canonical_queue_name(queue)
        attributes = {
            # Their consumers are no-ack: a message is deleted as it is received.
            "VisibilityTimeout": "30",
            "MessageRetentionPeriod": str(max(MIN_RETENTION_S, int((ttl_ms or 0) / 1000))),
        }
        tags = {TAG_EXPIRES: str(max(MIN_EXPIRY_S, (expires_ms or 0) / 1000)), TAG_ALIVE: str(int(time.time()))}
        url = self.sqs(queue=name).create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
        self._queue_cache[name] = url
        self._ephemeral[queue] = entry = _Ephemeral(queue, url, self._cleanup_client("sqs"), self.channel_id)
        track(entry)
        return queue_declare_ok_t(queue, 0, 0)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> None:
        entry = self._ephemeral.pop(queue, None)
        if entry is None:
            super().queue_delete(queue, if_unused=if_unused, if_empty=if_empty, **kwargs)
            return
        self.state.queue_bindings_delete(queue)
        self._forget(entry)
        entry.drop()
        return None

    def _delete(self, queue: str, exchange: str | None = None, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, exchange, *args, **kwargs)
        # kombu 5.7.0 pops the Celery name from a cache keyed by the SQS name, so the deleted
        # queue's URL stayed cached (celery/kombu#2091 made _delete delete; this part remains).
        self._queue_cache.pop(self.canonical_queue_name(queue), None)

    def _subscribe_queue_to_fanout_exchange_if_required(self, queue_name: str) -> None:
        super()._subscribe_queue_to_fanout_exchange_if_required(queue_name)
        entry = self._ephemeral.get(queue_name)
        if entry is None:
            return
        for key in self.state.queue_index.get(queue_name, ()):
            if self._exchange_is_fanout(key.exchange):
                # Cached by kombu when it subscribed just now: no second call.
                entry.subscriptions.add(self.fanout.subscriptions.subscribe_queue(queue_name, key.exchange))
                entry.sns = self._cleanup_client("sns")

    def _cleanup_client(self, service: str) -> Any:
        """A client for deletes and keep-alives: short timeouts and no retries, as kombu's
        release_client_config, so that a process stopping while the broker is away does not hang."""
        clients = self.connection._cleanup_clients
        if service not in clients:
            clients[service] = self._new_boto_client(
                service=service, region=self.region, access_key_id=self.conninfo.userid,
                secret_access_key=self.conninfo.password, config=self.release_client_config,
            )
        return clients[service]

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        if self._exchange_is_fanout(exchange):
            self._sweep(exchange)  # instead of kombu's cleanup, which it includes
            self.fanout._get_or_create_topic(exchange)

    def _sweep(self, exchange: str) -> None:
        """Remove the topic's subscriptions whose queue is gone or expired, and those queues.

        kombu 5.7.0 removes subscriptions of deleted queues only; an SQS queue has no
        ``x-expires``, so an ephemeral queue whose consumer died is found by its tags.
        """
        if self.predefined_exchanges:
            return
        sns = self.fanout.get_client()
        sqs = self.sqs()
        topic_arn = self.fanout._get_or_create_topic(exchange)
        now = time.time()
        try:
            pages = list(sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn))
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not list the subscriptions of %s: %s", topic_arn, exc)
            return
        for page in pages:
            for sub in page.get("Subscriptions") or ():
                if sub.get("Protocol", "").lower() != "sqs" or not sub["SubscriptionArn"].startswith("arn:"):
                    continue
                queue_name = sub["Endpoint"].split(":")[-1]
                try:
                    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
                    tags = sqs.list_queue_tags(QueueUrl=url).get("Tags") or {}
                except ClientError as exc:
                    if not _is_missing(exc, _MISSING_QUEUE):
                        log.warning("could not look at the subscribed queue %s: %s", queue_name, exc)
                        continue
                    url, tags = None, {}
                if url is not None:
                    try:
                        expires = max(float(tags[TAG_EXPIRES]), MIN_EXPIRY_S)
                        alive = float(tags.get(TAG_ALIVE, 0))
                    except (KeyError, ValueError):
                        continue  # not ephemeral: somebody else's queue
                    if now - alive <= expires:
                        continue
                log.info("removing %s's subscription of %s (%s)", exchange, queue_name,
                         "expired" if url else "queue gone")
                stale = _Ephemeral(queue_name, url or "", sqs, self.channel_id, sns=sns,
                                   subscriptions={sub["SubscriptionArn"]})
                if url is None:
                    stale.dropped = True
                    try:
                        sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
                    except (ClientError, BotoCoreError) as exc:
                        log.warning("could not unsubscribe %s: %s", sub["SubscriptionArn"], exc)
                else:
                    stale.drop()

    def _keepalive(self, queue: str) -> None:
        entry = self._ephemeral.get(queue)
        if entry is None or time.monotonic() - entry.touched < KEEPALIVE_S:
            return
        entry.touched = time.monotonic()
        try:
            entry.sqs.tag_queue(QueueUrl=entry.url, Tags={TAG_ALIVE: str(int(time.time()))})
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not refresh the keep-alive tag of %s: %s", entry.url, exc)

    def _forget(self, entry: _Ephemeral) -> None:
        self._queue_cache.pop(self.canonical_queue_name(entry.name), None)
        for channel in list(self.connection.channels):
            subscriptions = getattr(channel._fanout, "subscriptions", None)
            if subscriptions is not None:
                for key in [k for k in subscriptions._subscription_arn_cache if k.endswith(f":{entry.name}")]:
                    subscriptions._subscription_arn_cache.pop(key, None)

    def close(self) -> None:
        # An ephemeral queue lives as long as the channel that declared it (AMQP's exclusive
        # queues live as long as their connection; a channel is what Celery's pidbox and
        # Flower's receiver close when they stop).
        if self.connection is not None and not self.closed:
            for name, entry in list(self._ephemeral.items()):
                if entry.channel_id == self.channel_id:
                    self.queue_delete(name)
        super().close()

    # -- polling: keep-alive, and long polls for broadcast queues ------------------------------

    def _is_broadcast_queue(self, queue: str) -> bool:
        return any(self._exchange_is_fanout(key.exchange) for key in self.state.queue_index.get(queue, ()))

    def _get_bulk(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        self._keepalive(queue)
        return super()._get_bulk(queue, *args, **kwargs)

    def _receive_message(self, queue: str, max_number_of_messages: int = 1,
                         wait_time_seconds: int | None = None) -> Any:
        if self._is_broadcast_queue(queue):
            wait_time_seconds = self.broadcast_wait_time_seconds
        return super()._receive_message(queue, max_number_of_messages, wait_time_seconds)

    def _get_async(self, queue: str, count: int = 1, callback: Any = None) -> Any:
        self._keepalive(queue)
        return super()._get_async(queue, count, callback)

    def _get_from_sqs(self, queue_name: str, queue_url: str, connection: Any, count: int = 1,
                      callback: Any = None) -> Any:
        wait = self.wait_time_seconds
        if any(self._is_broadcast_queue(q) for q in self._active_queues if self.canonical_queue_name(q) == queue_name):
            wait = self.broadcast_wait_time_seconds
        return connection.receive_message(queue_name, queue_url, number_messages=count,
                                          wait_time_seconds=wait, callback=callback)

    # -- 8. broker faults: an unreachable SQS is waited out, with backoff ------------------------

    #: The longest pause between two polls of a queue while SQS does not answer.
    MAX_OUTAGE_BACKOFF_S = 10.0

    @property
    def _outages(self) -> dict[str, int]:
        """Per queue, how many polls in a row SQS did not answer."""
        found: dict[str, int] | None = self.__dict__.get("_pudato_outages")
        if found is None:
            found = self.__dict__["_pudato_outages"] = {}
        return found

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> int:
        # kombu 5.7.0's async client answers a timeout, a refused connection (curl's 599) or a
        # 5xx with an empty *list* (AsyncAWSQueryConnection._on_list_ready, kept from the
        # celery/kombu#1064 and #1173 fixes), while _on_messages_ready, rewritten for SQS's JSON
        # protocol (the change celery/kombu#2260 debated reverting), calls messages.get() and
        # raises AttributeError("'list' object has no attribute 'get'"): an "Unrecoverable
        # error" that ends the worker whenever SQS is briefly away. Treat it as an empty poll.
        if not isinstance(messages, dict):
            failures = self._outages[qname] = self._outages.get(qname, 0) + 1
            if failures == 1:
                log.warning("SQS did not answer a poll of %s; retrying with backoff", qname)
            return 0
        if self._outages.pop(qname, 0):
            log.warning("SQS answers polls of %s again", qname)
        received: int = super()._on_messages_ready(queue, qname, messages)
        return received

    def asynsqs(self, queue: str | None = None) -> Any:
        connection = super().asynsqs(queue)
        if not getattr(connection, "_pudato_guarded", False):
            # Any other HTTP error on ReceiveMessage (a 400 while a restarted server is still
            # recreating its queues) is a plain Exception in kombu 5.7.0, which also ends the
            # worker: read it as an unanswered poll too, and let the backoff wait it out.
            on_list_ready = connection._on_list_ready

            def guarded(parent: Any, markers: Any, operation: str, response: Any) -> Any:
                try:
                    return on_list_ready(parent, markers, operation, response)
                except Exception as exc:
                    if operation != "ReceiveMessage":
                        raise
                    log.warning("SQS ReceiveMessage failed: %s", exc)
                    return []

            connection._on_list_ready = guarded
            connection._pudato_guarded = True
        return connection

    def _loop1(self, queue: str, messages_fetched: Any = None) -> None:
        failures = self._outages.get(queue, 0)
        if not failures or messages_fetched:
            super()._loop1(queue, messages_fetched)
            return
        # Exponential, with jitter, so that a fleet of workers does not return all at once.
        delay = delay_for(failures, 1.0, self.MAX_OUTAGE_BACKOFF_S, jitter=(0.5, 1.0))
        self.hub.call_later(delay, self._schedule_queue, queue)
