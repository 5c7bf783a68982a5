"""The Celery app: ``celery -A workers.app worker -Q pudato-storage``."""

from celery import Celery

from pudato.handler_specs import SPECS

# Remote control with queue names SQS can live with (workers/monitoring.py).
app = Celery("pudato", control="workers.monitoring:Control")
app.config_from_object("celeryconfig")

# Task modules and signal handlers register themselves on import.
app.conf.imports = ("workers.signals", *(spec.task_module for spec in SPECS))
import workers.signals  # noqa: E402,F401  (the publishing side needs the job-id header too)
from workers.liveness import Liveness  # noqa: E402

app.steps["worker"].add(Liveness)
