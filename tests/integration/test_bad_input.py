"""Malformed messages get a clear error in the registry; no worker crashes."""

from __future__ import annotations

import pytest
from helpers import wait_for

from pudato import jobs

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            {"action": "frobnicate", "payload": {}},
            "unknown action 'frobnicate' for the storage handler; "
            "known actions: copy, delete, get, head, list, ping, put",
        ),
        ({"action": "head", "payload": {}}, "invalid payload for storage.head: key: Field required"),
        ({"action": "list", "payload": {"limit": "lots"}}, "limit: Input should be a valid integer"),
        ({"action": "put", "payload": {"key": "x", "content": "a", "surprise": 1}}, "surprise: Extra inputs"),
        ({"action": "head", "payload": {"key": "../../etc/passwd"}}, "has an empty, '.' or '..' segment"),
        ("not json at all", "command is not valid JSON"),
        (None, "message carries no 'command'"),
    ],
    ids=["unknown-action", "missing-field", "mistyped-field", "extra-field", "unsafe-key", "not-json", "no-command"],
)
def test_bad_commands_fail_with_a_clear_error(stack, command, expected):
    from workers.storage import execute

    sent = execute.delay(command=command) if command is not None else execute.delay()
    record = jobs.wait(sent.id, timeout=60)
    (step,) = record["steps"]
    assert record["status"] == "failed"
    assert step["status"] == "failed"
    assert expected in step["error"]["message"], step["error"]


def test_a_body_that_is_not_json_is_recorded_and_skipped(stack):
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName="pudato-storage")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{this is not json")

    def ours() -> list[dict]:  # other tests record rejected messages too
        return [r for r in stack.registry.rejected_messages() if "{this is not json" in (r["body_excerpt"] or "")]

    rejected = wait_for(ours, 60, "the worker did not record the message it could not read")
    assert rejected[-1]["worker"].startswith("storage@")
    assert stack.workers["storage"].poll() is None
    after = jobs.wait(jobs.submit(jobs.step("storage", "list")).job_id, timeout=60)
    assert after["status"] == "succeeded"


def test_a_pickled_message_is_refused(stack):
    from workers.app import app

    before = len(stack.registry.rejected_messages())
    app.send_task("pudato.storage.execute", kwargs={"command": {"action": "list"}}, serializer="pickle")
    rejected = wait_for(lambda: stack.registry.rejected_messages()[before:], 60,
                        "the worker did not record the pickled message")
    assert "pickle" in rejected[0]["reason"]
    assert stack.workers["storage"].poll() is None


def test_a_failed_query_keeps_the_inputs_it_was_reading(stack):
    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", key="bad_input/people.csv", content="name\nada\ngrace\n"),
            jobs.step("table", "load", table="bad_input_people", key="bad_input/people.csv"),
            jobs.step("query", "run", sql="select cast(name as integer) as n from bad_input_people"),
        )
    )
    record = jobs.wait(job.job_id, timeout=120)
    assert record["status"] == "failed"
    query = record["steps"][-1]
    assert query["handler"] == "query"
    assert query["status"] == "failed"
    assert "ada" in query["error"]["message"]  # DuckDB names the value it could not convert
    assert [ref["name"] for ref in query["inputs"]] == ["main.bad_input_people"]
    loaded = record["steps"][1]["outputs"]
    assert [ref["namespace"] for ref in query["inputs"]] == [ref["namespace"] for ref in loaded]
