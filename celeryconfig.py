"""Celery configuration for Pudato, built from ``pudato.settings`` (``PUDATO_*`` variables).

Each handler has its own SQS queue, made by ``pudato infra up`` with its
visibility timeout and dead-letter queue. Messages are JSON only.

Monitoring (``PUDATO_BROKER__MONITORING``, on by default): task events and
remote control, so that Flower and ``celery inspect`` see the workers and
their tasks. They travel through SQS and SNS like everything else: the
transport ``workers.transport:Transport`` broadcasts the event exchange
(``celeryev``) and the control exchange (``celery.pidbox``) through SNS topics
of those names, each monitor and worker consuming a queue of its own that is
deleted when it stops. Off, no event is sent and no control queue is made.
"""

from urllib.parse import quote, urlsplit

from kombu import Queue

from pudato.protocol import HANDLERS
from pudato.settings import get_settings

_settings = get_settings()


def _broker_url() -> str:
    if _settings.broker.url:
        return _settings.broker.url
    endpoint = _settings.aws.endpoint_url
    if not endpoint:
        return "sqs://"  # real AWS: credentials come from the environment or the instance role
    parts = urlsplit(endpoint)
    key = quote(_settings.aws.access_key_id or "", safe="")
    secret = _settings.aws.secret_access_key
    secret_text = quote(secret.get_secret_value(), safe="") if secret else ""
    # kombu's SQS transport takes its endpoint from the broker URL's host and port.
    return f"sqs://{key}:{secret_text}@{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


_monitoring = _settings.broker.monitoring

broker_url = _broker_url()
# kombu's SQS transport, with SNS broadcast for events and remote control (workers/transport.py).
broker_transport = "workers.transport:Transport" if broker_url.startswith("sqs://") else None
broker_connection_retry_on_startup = True
# A broker that is away is waited for, never given up on: the worker must not exit on a transient fault.
broker_connection_max_retries = None
# Publishing a chain's next step (from the worker) waits out a broker outage of up to about five minutes.
task_publish_retry_policy = {"max_retries": 60, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 5.0}
broker_transport_options = {
    "region": _settings.aws.region,
    "is_secure": not (_settings.aws.endpoint_url or "https:").startswith("http:"),
    "wait_time_seconds": _settings.broker.wait_time_seconds,
    "polling_interval": _settings.broker.polling_interval,
    # Only used if kombu has to create a queue itself; `pudato infra up` sets each queue's own.
    "visibility_timeout": max(q.visibility_timeout_s for q in _settings.broker.queues.values()),
    # Monitoring: fanout exchanges through SNS; the event exchange too, though Celery declares it
    # a topic exchange. Events go out in the background, up to ten per SNS call, each waiting at
    # most half a second. Monitor and mailbox queues, idle mostly, long-poll 10 s, not 1 s.
    "supports_fanout": _monitoring,
    "fanout_exchanges": ["celeryev"],
    "fanout_publish_interval": 0.5,
    "broadcast_wait_time_seconds": 10,
}

task_queues = [Queue(_settings.queue_name(handler)) for handler in HANDLERS]
task_routes = {f"pudato.{handler}.*": {"queue": _settings.queue_name(handler)} for handler in HANDLERS}
task_default_queue = _settings.queue_name("catalog")

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = False

result_backend = "workers.result_backend:RegistryResultBackend"
result_expires = 86_400
result_chord_join_timeout = 60.0

worker_consumer = "workers.consumer:PudatoConsumer"
# Task events (received, started, succeeded, failed...) from the workers, and task-sent from whoever
# sends a task: with it Flower knows each task's queue (routing key).
worker_send_task_events = _monitoring
task_send_sent_event = _monitoring
worker_enable_remote_control = _monitoring
event_exchange = "celeryev"  # named in broker_transport_options["fanout_exchanges"]
timezone = "UTC"
enable_utc = True


beat_scheduler = "workers.beat:RegistryScheduler"
beat_max_loop_interval = 5
