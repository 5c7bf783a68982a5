"""The Celery app: ``celery -A workers.app worker -Q pudato-storage``."""

from celery import Celery

# Remote control with queue names SQS can live with (workers/monitoring.py).
app = Celery("pudato", control="workers.monitoring:Control")
app.config_from_object("celeryconfig")

# Task modules and signal handlers register themselves on import.
app.conf.imports = (
    "workers.signals",
    "workers.storage",
    "workers.query",
    "workers.table",
    "workers.catalog",
    "workers.transform",
)
import workers.signals  # noqa: E402,F401  (the publishing side needs the job-id header too)
from workers.liveness import Liveness  # noqa: E402

app.steps["worker"].add(Liveness)
