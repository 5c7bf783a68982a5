"""Celery beat's scheduler for Pudato: schedules in the registry, one active beat at a time.

``celery -A workers.app beat`` runs this scheduler (``beat_scheduler`` in
``celeryconfig.py``). Every tick it takes or renews the lease; the beat that
holds it claims the due slots in the registry and submits their jobs, each
recorded with ``trigger = schedule:<name>``. A beat without the lease stands by,
renewing its claim, and takes over when the holder stops renewing.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime
from typing import Any

from celery.beat import Scheduler

from pudato import jobs, pipelines, schedules
from pudato.protocol import utcnow
from pudato.settings import Settings, get_settings

log = logging.getLogger(__name__)


def sync_configured(settings: Settings) -> list[str]:
    """Write configuration and pipeline-file schedules to the registry; returns their names."""
    names = []
    for name, raw in settings.beat.schedules.items():
        schedules.upsert(settings.registry.url, name, schedules.ScheduleSpec.model_validate(raw), source="config")
        names.append(name)
    if settings.beat.repo:
        from pudato.backends.logic import logic_backend

        logic = logic_backend(settings)
        checkout = logic.checkout(settings.beat.repo, logic.resolve(settings.beat.repo, settings.beat.ref))
        for path in sorted((checkout.path / "pipelines").glob("*.y*ml")):
            pipeline = pipelines.load(checkout.path, path.stem)
            if pipeline.schedule is None:
                continue
            spec = schedules.ScheduleSpec(pipeline=pipeline.name, repo=settings.beat.repo, ref=pipeline.schedule.ref,
                                          cron=pipeline.schedule.cron, every_s=pipeline.schedule.every_s)
            schedules.upsert(settings.registry.url, f"pipeline:{pipeline.name}", spec, source="pipeline")
            names.append(f"pipeline:{pipeline.name}")
    return names


def fire(settings: Settings, name: str, target: dict[str, Any], slot: datetime, app: Any = None) -> str:
    """Submit the job for one claimed slot; returns its job id."""
    job_name = f"{name}@{slot.isoformat()}"
    trigger = f"schedule:{name}"
    if "step" in target:
        step = target["step"]
        node = jobs.step(step["handler"], step["action"], **(step.get("payload") or {}))
        submitted = jobs.submit(node, name=job_name, trigger=trigger, settings=settings, app=app)
    else:
        submitted = pipelines.submit(target["pipeline"], target["repo"], target.get("ref", "main"),
                                     settings=settings, trigger=trigger, app=app)
    schedules.note_job(settings.registry.url, name, submitted.job_id)
    return submitted.job_id


class RegistryScheduler(Scheduler):
    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        settings = get_settings()
        try:
            names = sync_configured(settings)
            log.info("beat %s: %d configured schedule(s) synced", self.holder, len(names))
        except Exception:  # a bad pipeline file must not keep the other schedules from running
            log.exception("beat %s: could not sync configured schedules", self.holder)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        settings = get_settings()
        url = settings.registry.url
        renew_every = settings.beat.lease_ttl_s / 3
        leader = schedules.acquire_lease(url, self.holder, settings.beat.lease_ttl_s)
        if leader != self.leader:
            log.warning("beat %s: %s", self.holder, "now active" if leader else "standing by")
            self.leader = leader
        if not leader:
            return renew_every
        for name, target, slot in schedules.claim_due(url):
            try:
                job_id = fire(settings, name, target, slot, app=self.app)
                log.info("beat %s: schedule %s fired job %s for %s", self.holder, name, job_id, slot.isoformat())
            except Exception:
                log.exception("beat %s: schedule %s could not submit its job", self.holder, name)
        upcoming = schedules.next_due(url)
        wait = (upcoming - utcnow()).total_seconds() if upcoming else renew_every
        return max(0.05, min(renew_every, wait))

    def close(self) -> None:
        if self.leader:
            schedules.release_lease(get_settings().registry.url, self.holder)
        super().close()

    @property
    def info(self) -> str:
        return f"    . registry schedules, lease holder {self.holder}"
