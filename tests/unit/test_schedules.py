"""Schedules on SQLite: next slots, exactly-once claims, the lease, and restarts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from pudato import schedules
from pudato.errors import InvalidCommand, NotFound
from pudato.registry.migrate import upgrade

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
PING = {"step": {"handler": "storage", "action": "ping"}}


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return url


def test_next_slot_for_intervals_and_cron():
    assert schedules.next_slot(None, 60, T0, T0) == T0 + timedelta(seconds=60)
    # After downtime the next slot stays aligned to the schedule, never in the past.
    assert schedules.next_slot(None, 60, T0, T0 + timedelta(seconds=250)) == T0 + timedelta(seconds=300)
    assert schedules.next_slot("30 2 * * *", None, T0, T0) == datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
    assert schedules.next_slot("*/15 * * * *", None, T0, T0) == T0 + timedelta(minutes=15)
    # 2026-11-30 is a Monday (day-of-week 1).
    assert schedules.next_slot("0 9 * * 1", None, T0, T0) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"step": {"handler": "storage", "action": "ping"}}, "exactly one of cron or every_s"),
        ({"step": {"handler": "storage"}, "pipeline": "x", "repo": "r", "every_s": 5}, "exactly one of pipeline"),
        ({"pipeline": "x", "every_s": 5}, "needs repo"),
        ({"step": {}, "cron": "61 * * * *"}, "not valid"),
        ({"step": {}, "cron": "* * *"}, "needs 5 fields"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises((ValueError, InvalidCommand), match=message):
        schedules.ScheduleSpec.model_validate(spec)


def test_a_slot_is_claimed_once_even_by_racing_claimers(url):
    schedules.upsert(url, "ping", schedules.ScheduleSpec(step=PING["step"], every_s=60))
    due = schedules.listing(url)[0]["next_run_at"]
    now = (due.replace(tzinfo=UTC) if due.tzinfo is None else due) + timedelta(seconds=1)
    claims: list = []
    threads = [threading.Thread(target=lambda: claims.extend(schedules.claim_due(url, now))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [name for name, _, _ in claims] == ["ping"]
    assert schedules.claim_due(url, now) == []


def test_missed_slots_are_coalesced_and_the_next_one_kept(url):
    schedules.upsert(url, "ping", schedules.ScheduleSpec(step=PING["step"], every_s=60))
    first = schedules.listing(url)[0]["next_run_at"].replace(tzinfo=UTC)
    later = first + timedelta(seconds=60 * 5 + 10)  # beat was down for five slots
    claims = schedules.claim_due(url, later)
    assert len(claims) == 1
    assert claims[0][2] == first
    row = schedules.listing(url)[0]
    assert row["next_run_at"].replace(tzinfo=UTC) == first + timedelta(seconds=360)
    assert row["run_count"] == 1
    assert row["last_run_at"] is not None


def test_pause_resume_remove_and_redefine_keep_history(url):
    schedules.upsert(url, "ping", schedules.ScheduleSpec(step=PING["step"], every_s=60))
    schedules.set_enabled(url, "ping", False)
    far = datetime.now(UTC) + timedelta(days=1)
    assert schedules.claim_due(url, far) == []
    schedules.set_enabled(url, "ping", True)
    assert len(schedules.claim_due(url, far)) == 1
    schedules.upsert(url, "ping", schedules.ScheduleSpec(step={"handler": "catalog", "action": "ping"}, every_s=60),
                     source="config")
    row = schedules.listing(url)[0]
    assert row["run_count"] == 1
    assert row["target"]["step"]["handler"] == "catalog"
    assert row["source"] == "config"
    schedules.remove(url, "ping")
    with pytest.raises(NotFound):
        schedules.remove(url, "ping")


def test_one_lease_holder_until_it_expires_or_is_released(url, monkeypatch):
    # The lease's clock is driven by the test, so a stalled machine cannot expire a lease early.
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(schedules, "utcnow", lambda: clock[0])
    assert schedules.acquire_lease(url, "beat-a", ttl_s=30)
    assert not schedules.acquire_lease(url, "beat-b", ttl_s=30)
    clock[0] += timedelta(seconds=10)
    assert schedules.acquire_lease(url, "beat-a", ttl_s=30)  # renewal
    clock[0] += timedelta(seconds=25)
    assert not schedules.acquire_lease(url, "beat-b", ttl_s=30), "the renewal did not extend the lease"
    clock[0] += timedelta(seconds=6)
    assert schedules.acquire_lease(url, "beat-b", ttl_s=10)
    assert not schedules.acquire_lease(url, "beat-a", ttl_s=10)
    schedules.release_lease(url, "beat-b")
    assert schedules.acquire_lease(url, "beat-a", ttl_s=10)
