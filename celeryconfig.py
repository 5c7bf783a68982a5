"""Celery configuration for Pudato, built from ``pudato.settings`` (``PUDATO_*`` variables).

Each handler has its own SQS queue, made by ``pudato infra up`` with its
visibility timeout and dead-letter queue. Messages are JSON only.
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


broker_url = _broker_url()
broker_connection_retry_on_startup = True
broker_transport_options = {
    "region": _settings.aws.region,
    "is_secure": not (_settings.aws.endpoint_url or "https:").startswith("http:"),
    "wait_time_seconds": _settings.broker.wait_time_seconds,
    "polling_interval": _settings.broker.polling_interval,
    # Only used if kombu has to create a queue itself; `pudato infra up` sets each queue's own.
    "visibility_timeout": max(q.visibility_timeout_s for q in _settings.broker.queues.values()),
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
worker_send_task_events = False
timezone = "UTC"
enable_utc = True


beat_scheduler = "workers.beat:RegistryScheduler"
beat_max_loop_interval = 5
