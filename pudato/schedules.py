"""Schedules: jobs that beat submits on a cron line or an interval, kept in the registry.

Three sources, one table: schedules in configuration (``PUDATO_BEAT__SCHEDULES``),
schedules in the logic repository's pipeline files (``schedule:`` in
``pipelines/*.yml``), and schedules added at run time (``pudato schedules add``).
Syncing configuration never resets what happened at run time (pause, last run).

Only the beat holding the lease fires anything (:func:`acquire_lease`); the
others stand by and take over when it stops renewing. Each firing is claimed
with a conditional update on ``run_count``, so a slot fires once even if two
beats ever believed they were leader. After downtime, missed slots are
coalesced into one run, and the next slot stays on its schedule.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import ParseException, crontab_parser
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from pudato.errors import InvalidCommand, NotFound
from pudato.protocol import utcnow
from pudato.registry.database import get_engine, session_scope
from pudato.registry.models import BeatLease, Schedule

log = logging.getLogger(__name__)
LEASE = "beat"


class ScheduleSpec(BaseModel):
    """What to run and when: a pipeline at a ref's head, or one step."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str | None = None
    repo: str | None = None
    ref: str = "main"
    step: dict[str, Any] | None = None
    cron: str | None = None
    every_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_of_each(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron or every_s")
        if (self.pipeline is None) == (self.step is None):
            raise ValueError("give exactly one of pipeline (with repo) or step")
        if self.pipeline is not None and not self.repo:
            raise ValueError("a pipeline schedule needs repo")
        if self.cron is not None:
            cron_fields(self.cron)
        return self

    def target(self) -> dict[str, Any]:
        if self.step is not None:
            return {"step": self.step}
        return {"pipeline": self.pipeline, "repo": self.repo, "ref": self.ref}


# -- when -------------------------------------------------------------------------------


def cron_fields(line: str) -> tuple[set[int], ...]:
    """minute hour day-of-month month day-of-week, as sets (celery's own field parser)."""
    parts = line.split()
    if len(parts) != 5:
        raise InvalidCommand(f"cron {line!r} needs 5 fields: minute hour day-of-month month day-of-week")
    limits = ((60, 0), (24, 0), (31, 1), (12, 1), (7, 0))
    try:
        return tuple(crontab_parser(size, start).parse(part) for part, (size, start) in zip(parts, limits, strict=True))
    except (ParseException, ValueError) as exc:
        raise InvalidCommand(f"cron {line!r} is not valid: {exc}") from None


def next_slot(cron: str | None, every_s: float | None, anchor: datetime, now: datetime) -> datetime:
    """The first slot strictly after ``now``, aligned to ``anchor`` for intervals."""
    if every_s is not None:
        steps = max(1, int((now - anchor).total_seconds() // every_s) + 1)
        return anchor + timedelta(seconds=every_s * steps)
    minutes, hours, days, months, weekdays = cron_fields(cron or "")
    moment = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        if moment.month not in months or moment.day not in days or (moment.isoweekday() % 7) not in weekdays:
            moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
        elif moment.hour not in hours:
            moment = (moment + timedelta(hours=1)).replace(minute=0)
        elif moment.minute not in minutes:
            moment += timedelta(minutes=1)
        else:
            return moment
    raise InvalidCommand(f"cron {cron!r} never fires")


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything Pudato stores is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# -- the table ----------------------------------------------------------------------------


def upsert(url: str, name: str, spec: ScheduleSpec, source: str = "cli") -> None:
    """Create a schedule, or change its definition while keeping its run history and pause state."""
    now = utcnow()
    with session_scope(url) as session:
        row = session.get(Schedule, name)
        if row is None:
            session.add(Schedule(name=name, source=source, target=spec.target(), cron=spec.cron, every_s=spec.every_s,
                                 enabled=True, run_count=0, updated_at=now,
                                 next_run_at=next_slot(spec.cron, spec.every_s, now, now)))
            return
        changed_timing = (row.cron, row.every_s) != (spec.cron, spec.every_s)
        row.target, row.cron, row.every_s, row.source, row.updated_at = (
            spec.target(), spec.cron, spec.every_s, source, now)
        if changed_timing:
            row.next_run_at = next_slot(spec.cron, spec.every_s, now, now)


def listing(url: str) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(Schedule).order_by(Schedule.name))
        return [{c.key: getattr(row, c.key) for c in Schedule.__table__.columns} for row in rows]


def remove(url: str, name: str) -> None:
    with session_scope(url) as session:
        removed = session.execute(delete(Schedule).where(Schedule.name == name))
        if getattr(removed, "rowcount", 0) == 0:  # a DML result: SQLAlchemy types it as the generic Result
            raise NotFound(f"no schedule named {name!r}", schedule=name)


def set_enabled(url: str, name: str, enabled: bool) -> None:
    with session_scope(url) as session:
        row = session.get(Schedule, name)
        if row is None:
            raise NotFound(f"no schedule named {name!r}", schedule=name)
        row.enabled = enabled
        if enabled:  # a resumed schedule starts from now, not from the slots it missed while paused
            now = utcnow()
            row.next_run_at = next_slot(row.cron, row.every_s, _aware(row.last_slot) or now, now)


# -- who runs them ---------------------------------------------------------------------------


def acquire_lease(url: str, holder: str, ttl_s: float) -> bool:
    """Take or renew the beat lease; False while another beat holds an unexpired one."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl_s)
    with get_engine(url).begin() as connection:
        taken = connection.execute(
            update(BeatLease)
            .where(BeatLease.name == LEASE, or_(BeatLease.holder == holder, BeatLease.expires_at < now))
            .values(holder=holder, expires_at=expires)
        ).rowcount
        if taken:
            return True
        if connection.execute(select(BeatLease.name).where(BeatLease.name == LEASE)).first():
            return False
    try:
        with get_engine(url).begin() as connection:
            connection.execute(insert(BeatLease).values(name=LEASE, holder=holder, expires_at=expires))
        return True
    except IntegrityError:
        return False


def release_lease(url: str, holder: str) -> None:
    with get_engine(url).begin() as connection:
        connection.execute(delete(BeatLease).where(BeatLease.name == LEASE, BeatLease.holder == holder))


def claim_due(url: str, now: datetime | None = None) -> list[tuple[str, dict[str, Any], datetime]]:
    """Claim every due slot: (name, target, slot). A slot is claimed by one caller only."""
    now = now or utcnow()
    claimed: list[tuple[str, dict[str, Any], datetime]] = []
    with session_scope(url) as session:
        due = [(row.name, row.target, row.cron, row.every_s, row.next_run_at, row.run_count)
               for row in session.scalars(select(Schedule).where(Schedule.enabled.is_(True),
                                                                 Schedule.next_run_at <= now))]
    for name, target, cron, every_s, next_run_at, run_count in due:
        slot = _aware(next_run_at)
        assert slot is not None
        with get_engine(url).begin() as connection:
            won = connection.execute(
                update(Schedule)
                .where(Schedule.name == name, Schedule.run_count == run_count)
                .values(run_count=run_count + 1, last_run_at=now, last_slot=slot,
                        next_run_at=next_slot(cron, every_s, slot, now))
            ).rowcount
        if won:
            claimed.append((name, target, slot))
    return claimed


def note_job(url: str, name: str, job_id: str) -> None:
    with session_scope(url) as session:
        row = session.get(Schedule, name)
        if row is not None:
            row.last_job_id = job_id


def next_due(url: str) -> datetime | None:
    with get_engine(url).begin() as connection:
        value = connection.execute(
            select(Schedule.next_run_at).where(Schedule.enabled.is_(True)).order_by(Schedule.next_run_at).limit(1)
        ).scalar()
    return _aware(value)
