"""A liveness file per worker, for container orchestrators.

A probe should not depend on the broker (``celery inspect ping`` needs SQS, SNS and
a round trip through both). Instead the worker's own timer (driven by its event loop)
touches ``<liveness_dir>/<hostname>.alive`` every few seconds; a probe checks
the file's age with ``pudato worker alive <hostname>``. A worker whose loop is
stuck stops touching it; a worker that stops cleanly removes it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, ClassVar

from celery import bootsteps

from pudato.settings import get_settings


def liveness_file(hostname: str) -> Path:
    safe = hostname.replace("/", "_")
    return get_settings().worker.liveness_dir / f"{safe}.alive"


def is_alive(hostname: str, max_age_s: float) -> bool:
    try:
        return time.time() - liveness_file(hostname).stat().st_mtime <= max_age_s
    except FileNotFoundError:
        return False


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)


class Liveness(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.timer_ref: Any = None
        self.path: Path | None = None

    def start(self, worker: Any) -> None:
        self.path = liveness_file(worker.hostname)
        _touch(self.path)
        interval = get_settings().worker.liveness_interval_s
        self.timer_ref = worker.timer.call_repeatedly(interval, _touch, (self.path,), priority=10)

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
