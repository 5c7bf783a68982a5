"""Fault suite, step records: a slow registry plus a SIGKILLed pool process loses no record.

The registry is made slow by holding a lock on its ``jobs`` table from the test;
meanwhile the storage worker runs the job's steps and acknowledges their
messages. Then its pool process is SIGKILLed, the lock released, and every
step must still be recorded and the job must finish.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import wait_for
from sqlalchemy import create_engine, text

from pudato import jobs

pytestmark = pytest.mark.integration


def pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def all_ran(stack, task_ids: list[str]) -> bool:
    log = stack.worker_log("storage")
    return all(f"[{task_id}] succeeded" in log for task_id in task_ids)


def test_a_slow_registry_and_a_sigkilled_pool_process_lose_no_step_record(stack):
    spool = Path(stack.env["PUDATO_REGISTRY__SPOOL_DIR"])
    puts = [jobs.step("storage", "put", key=f"faults/records/{i}.csv", content=f"n\n{i}\n") for i in range(6)]
    engine = create_engine(stack.env["PUDATO_REGISTRY__URL"])
    locker = engine.connect()
    try:
        job = jobs.submit(jobs.group(*puts), name="slow registry")
        transaction = locker.begin()
        # EXCLUSIVE: reads go on, but every step record (SELECT ... FOR UPDATE on its job) waits.
        locker.execute(text("LOCK TABLE jobs IN EXCLUSIVE MODE"))
        # Ran, and (late acks) acknowledged as each task returned; other tests' messages may be in flight.
        wait_for(lambda: all_ran(stack, [step.step_id for step in job.steps]), 120, "the steps were not all run")
        (child,) = pool_children(stack.workers["storage"].pid)
        # Named <drain>.<pid>x<token>.<stamp>.json: the pool process's own, waiting for the registry.
        orphaned = [p for p in spool.glob("step-records.*.json") if p.name.split(".")[1].startswith(f"{child}x")]
        assert orphaned, "no record waited in the journal: the registry was not slow enough to prove anything"
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: pool_children(stack.workers["storage"].pid) not in ([], [child]), 120,
                 "the worker did not replace its pool process")
        transaction.commit()
    finally:
        locker.close()
        engine.dispose()
    record = jobs.wait(job.job_id, timeout=120)
    assert record["status"] == "succeeded"
    assert [s["status"] for s in record["steps"]] == ["succeeded"] * 6
    assert all(s["finished_at"] and s["outputs"] for s in record["steps"])
    wait_for(lambda: not [p for p in orphaned if p.exists()], 30, "the dead process's records stayed on disk")
    wait_for(lambda: not list(spool.glob("step-records.*.json")), 30, "the journal was not emptied")
