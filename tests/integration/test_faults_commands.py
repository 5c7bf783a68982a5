"""Fault suite, commands: oversize fields, NUL characters and forged ids, through real workers.

Nothing a producer sends may drop a record, fail another job or overwrite a
step: fields the registry could not hold are refused at parse time, with a
clear error; a command that claims a job or step without the platform's
signature is refused and recorded once in ``rejected_messages``.
"""

from __future__ import annotations

import pytest
from helpers import wait_for

from pudato import jobs
from pudato.settings import Settings
from pudato.signing import platform_key, sign

pytestmark = pytest.mark.integration


def rejected_with(stack, text: str) -> list[dict]:
    return [r for r in stack.registry.rejected_messages() if text in r["reason"] or text in (r["body_excerpt"] or "")]


@pytest.fixture(scope="module")
def victim(stack):
    """A finished job whose record must survive every forgery below."""
    job = jobs.submit(jobs.step("storage", "put", name="original", key="faults/victim.csv", content="a\n1\n"))
    record = jobs.wait(job.job_id, timeout=60)
    assert record["status"] == "succeeded"
    return record


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ({"action": "put", "step_name": "n" * 201, "payload": {"key": "faults/x.csv", "content": "x"}},
         "step_name: String should have at most 200 characters"),
        ({"action": "put", "payload": {"key": "faults/x.csv", "content": "a\x00b"}},
         "payload.content contains a NUL character"),
        ({"action": "put" + "t" * 70, "payload": {}}, "action: String should have at most 64 characters"),
    ],
    ids=["long-step-name", "nul", "long-action"],
)
def test_fields_the_registry_cannot_hold_fail_the_step_with_a_clear_error(stack, command, problem):
    from workers.storage import execute

    sent = execute.delay(command=command)
    record = jobs.wait(sent.id, timeout=60)
    (step,) = record["steps"]
    assert step["status"] == "failed"
    assert problem in step["error"]["message"]
    assert step["name"] is None


def test_an_oversize_job_id_is_refused_and_recorded_once(stack):
    from workers.storage import execute

    command = {"action": "list", "job_id": "j" * 65, "step_id": "s-oversize"}
    sent = execute.apply_async(kwargs={"command": command})
    again = execute.apply_async(kwargs={"command": command}, task_id=sent.id)  # a redelivery of the same message
    assert again.id == sent.id
    (row,) = wait_for(lambda: rejected_with(stack, "is not a valid id"), 60, "the refusal was not recorded")
    assert "command job_id" in row["reason"]
    assert row["queue"] == "pudato-storage"
    wait_for(lambda: _task_done(stack, sent.id, 2), 60, "the worker did not see both deliveries")
    assert len(rejected_with(stack, "is not a valid id")) == 1
    assert stack.workers["storage"].poll() is None


def _task_done(stack, task_id: str, times: int) -> bool:
    return stack.worker_log("storage").count(f"[{task_id}] received") >= times


def test_a_forged_job_id_neither_fails_the_job_nor_touches_its_step(stack, victim):
    from workers.storage import execute

    (original,) = victim["steps"]
    command = {"action": "put", "payload": {"key": "faults/forged.csv", "content": "evil"},
               "job_id": victim["id"], "step_id": original["id"]}
    execute.apply_async(kwargs={"command": command})
    (row,) = wait_for(lambda: rejected_with(stack, "faults/forged.csv"), 60, "the forgery was not recorded")
    assert "without a valid platform signature" in row["reason"]
    after = stack.registry.job(victim["id"])
    assert after["status"] == "succeeded"
    assert after["steps"][0]["outputs"] == original["outputs"]
    assert after["steps"][0]["history"] == original["history"]


def test_a_signed_command_with_a_changed_payload_is_refused(stack, victim):
    from workers.storage import execute

    (original,) = victim["steps"]
    command = {"handler": "storage", "action": "put", "payload": {"key": "faults/victim.csv", "content": "a\n1\n"},
               "job_id": victim["id"], "step_id": original["id"], "step_name": "original"}
    command["signature"] = sign(command, platform_key(Settings(_env_file=None)))
    command["payload"] = {"key": "faults/victim.csv", "content": "tampered"}
    execute.apply_async(kwargs={"command": command})
    wait_for(lambda: rejected_with(stack, "tampered"), 60, "the tampered command was not recorded")
    assert stack.registry.job(victim["id"])["steps"][0]["outputs"] == original["outputs"]
    body = stack.client("s3").get_object(Bucket=stack.env["PUDATO_STORAGE__BUCKET"], Key="faults/victim.csv")["Body"]
    assert body.read() == b"a\n1\n"


def test_a_task_id_that_names_another_jobs_step_records_nothing_there(stack, victim):
    from workers.storage import execute

    (original,) = victim["steps"]
    execute.apply_async(kwargs={"command": {"action": "list", "payload": {"prefix": "faults/"}}},
                        task_id=original["id"])
    (row,) = wait_for(lambda: rejected_with(stack, f"belongs to job {victim['id']}"), 60,
                      "the stolen step id was not refused")
    assert row["reason"].startswith("step record refused by the registry")
    after = stack.registry.job(victim["id"])
    assert after["status"] == "succeeded"
    assert after["steps"][0]["action"] == "put"
    assert after["steps"][0]["outputs"] == original["outputs"]


def test_a_plain_delay_is_still_a_job_of_its_own(stack):
    from workers.storage import execute

    sent = execute.delay(command={"action": "put", "payload": {"key": "faults/plain.csv", "content": "x"}})
    record = jobs.wait(sent.id, timeout=60)
    assert record["status"] == "succeeded"
    assert record["trigger"] == "delay"
