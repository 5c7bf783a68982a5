"""The step recorder: a record the database refuses goes to rejected_messages, once, and alone."""

from __future__ import annotations

import pytest

from pudato.registry.migrate import upgrade
from pudato.registry.recorder import StepRecorder
from pudato.registry.repository import Registry, StepPlan, StepUpdate


@pytest.fixture
def registry(tmp_path) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    registry = Registry(url)
    registry.create_job("job-a", [StepPlan(step_id="a1", handler="storage", action="put")])
    registry.create_job("job-b", [StepPlan(step_id="b1", handler="storage", action="put")])
    return registry


def _finished(step_id: str, job_id: str, task_id: str) -> StepUpdate:
    return StepUpdate(event="finished", step_id=step_id, job_id=job_id, handler="storage", action="put",
                      task_id=task_id, status="succeeded")


def test_a_refused_record_does_not_take_its_batch_with_it(registry, tmp_path):
    recorder = StepRecorder(registry, tmp_path / "spool")
    forged = _finished("a1", "job-b", "t-forged")  # a step of job-a, claimed for job-b
    for update in (_finished("a1", "job-a", "t1"), forged, _finished("b1", "job-b", "t2")):
        recorder.record(update)
    assert recorder.drain.flush(60)
    assert registry.job("job-a")["status"] == "succeeded"
    assert registry.job("job-b")["status"] == "succeeded"
    (rejected,) = registry.rejected_messages()
    assert "step a1 belongs to job job-a, not to job-b" in rejected["reason"]
    assert rejected["queue"] == "pudato-storage"


def test_a_refused_record_seen_again_is_recorded_once(registry, tmp_path):
    recorder = StepRecorder(registry, tmp_path / "spool")
    for _ in range(3):  # the same message, redelivered
        recorder.record(_finished("a1", "job-b", "t-forged"))
    assert recorder.drain.flush(60)
    assert len(registry.rejected_messages()) == 1


def test_a_step_claimed_for_a_job_it_is_not_in_is_refused(registry, tmp_path):
    recorder = StepRecorder(registry, tmp_path / "spool")
    recorder.record(_finished("stranger", "job-a", "t3"))
    assert recorder.drain.flush(60)
    assert [s["id"] for s in registry.job("job-a")["steps"]] == ["a1"]
    assert "step stranger is not a step of job job-a" in registry.rejected_messages()[0]["reason"]
