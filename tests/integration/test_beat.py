"""Beat over the PostgreSQL registry: two beats, one active; hand-over and restart without
duplicates, storms or gaps. Every fired job is recorded with what triggered it."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from pudato import devstack, jobs, schedules

pytestmark = pytest.mark.integration

EVERY_S = 3.0
NAME = "beat-ping"


def _start_beat(stack, label: str) -> subprocess.Popen:
    log = stack.state / "logs" / f"beat-{label}.log"
    env = {**os.environ, **stack.env, "PUDATO_BEAT__LEASE_TTL_S": "3",
           "PUDATO_BEAT__SCHEDULES": json.dumps({NAME: {"step": {"handler": "storage", "action": "ping"},
                                                        "every_s": EVERY_S}})}
    with open(log, "ab") as stderr:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO", "--pidfile=",
             "-s", str(stack.state / f"beat-{label}.db")],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    process.log = log
    return process


def _slots(stack) -> list[datetime]:
    fired = [j for j in stack.registry.jobs(500) if (j["name"] or "").startswith(f"{NAME}@")]
    assert all(j["trigger"] == f"schedule:{NAME}" for j in fired)
    return sorted(datetime.fromisoformat(j["name"].split("@", 1)[1]) for j in fired)


def _assert_every_slot_once(slots: list[datetime]) -> None:
    assert len(slots) == len(set(slots)), f"a slot fired twice: {slots}"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert all(abs(gap - EVERY_S) < 0.01 for gap in gaps), f"a slot was missed: {gaps}"


def _active(beats: dict[str, subprocess.Popen]) -> str:
    def lines(p):
        return [line for line in p.log.read_text().splitlines() if "now active" in line or "standing by" in line]

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        active = [label for label, p in beats.items() if lines(p) and "now active" in lines(p)[-1]]
        if len(active) == 1:
            return active[0]
        time.sleep(0.2)
    raise AssertionError("no single active beat")


def _wait_for_slots(stack, at_least: int, timeout: float = 120) -> list[datetime]:
    deadline = time.monotonic() + timeout
    while True:
        slots = _slots(stack)
        if len(slots) >= at_least:
            return slots
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(slots)} of {at_least} slots fired within {timeout:.0f}s: {slots}")
        time.sleep(0.5)


def test_two_beats_fire_each_slot_once_and_hand_over(stack):
    beats = {label: _start_beat(stack, label) for label in ("a", "b")}
    try:
        active = _active(beats)
        before = _wait_for_slots(stack, 2)
        _assert_every_slot_once(before)
        os.killpg(beats[active].pid, signal.SIGKILL)  # no goodbye: the lease must expire
        beats[active].wait()
        after = _wait_for_slots(stack, len(before) + 2)  # the standby took over
        _assert_every_slot_once(after)
        standby = next(label for label in beats if label != active)
        assert "now active" in beats[standby].log.read_text()
    finally:
        for process in beats.values():
            devstack.stop(process)
    row = next(r for r in schedules.listing(stack.env["PUDATO_REGISTRY__URL"]) if r["name"] == NAME)
    assert row["last_job_id"]
    assert jobs.wait(row["last_job_id"], timeout=60)["status"] == "succeeded"

    # A restart after downtime: one catch-up run for the missed slots, then the schedule as before.
    time.sleep(3 * EVERY_S)  # the downtime itself (setup: no assertion hangs on it)
    stopped_at_slots = _slots(stack)
    restarted_at = datetime.now(UTC)
    beat = _start_beat(stack, "c")
    try:
        new = _wait_for_slots(stack, len(stopped_at_slots) + 2)[len(stopped_at_slots):]
    finally:
        devstack.stop(beat)
    assert new[0] == stopped_at_slots[-1] + timedelta(seconds=EVERY_S), "the first missed slot was not run once"
    # Every slot missed before the restart is folded into that one run: the next is a live slot.
    assert _aware(new[1]) > restarted_at, f"a storm of missed runs: {new}"
    row = next(r for r in schedules.listing(stack.env["PUDATO_REGISTRY__URL"]) if r["name"] == NAME)
    assert row["run_count"] == len(_slots(stack))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
