"""Monitoring through SQS and SNS alone: Flower and ``celery inspect`` see every worker and task.

The stack's five workers run with monitoring on (the default): task events and
remote control, broadcast through SNS by ``workers.transport``. A job runs
while Flower is up; Flower's HTTP API then lists every worker, and every task
of the job with its queue, final state, arguments, runtime and result or
error; ``celery inspect ping`` answers from every worker. Once the monitors
have stopped, the queues and SNS subscriptions they made are gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from pudato import devstack, jobs
from pudato.protocol import HANDLERS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FINAL = {"SUCCESS", "FAILURE"}


def _broker_objects(stack: Any) -> tuple[set[str], set[tuple[str, str]]]:
    """Every queue name, and every (topic, endpoint) subscription."""
    sqs, sns = stack.client("sqs"), stack.client("sns")
    queues = {url.rsplit("/", 1)[-1] for url in sqs.list_queues(MaxResults=1000).get("QueueUrls", [])}
    subscriptions = set()
    for page in sns.get_paginator("list_subscriptions").paginate():
        for sub in page["Subscriptions"]:
            subscriptions.add((sub["TopicArn"].rsplit(":", 1)[-1], sub["Endpoint"].rsplit(":", 1)[-1]))
    return queues, subscriptions


class Flower:
    def __init__(self, stack: Any) -> None:
        self.port = devstack.free_port()
        self.log = stack.state / f"flower-{self.port}.log"
        with open(self.log, "ab") as stderr:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={self.port}",
                 "--address=127.0.0.1", "--inspect_timeout=5000"],
                env={**os.environ, **stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}, cwd=REPO,
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def wait_ready(self) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                self.get("/api/workers")
            except OSError:
                return False
            return True

        wait_for(answers, 60, "Flower's HTTP API")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Flower exits through sys.exit: atexit runs
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def test_flower_and_inspect_see_every_worker_and_task_and_leave_nothing_behind(stack):
    queues_before, subscriptions_before = _broker_objects(stack)
    # The workers' own mailboxes, subscribed to the control topic. (A worker killed with SIGKILL,
    # as test_failure_safety does, leaves its own until another process sweeps it, minutes later.)
    mailboxes = {endpoint for topic, endpoint in subscriptions_before if topic == "celery-pidbox"}
    assert {handler for handler in HANDLERS if any(m.startswith(f"{handler}_") for m in mailboxes)} == set(HANDLERS)
    assert mailboxes <= queues_before

    flower = Flower(stack)
    try:
        flower.wait_ready()
        # Flower's event queue is subscribed once its receiver runs: from then on it sees every event.
        # A new subscription: a Flower stopped earlier in the session may have left its own behind.
        wait_for(lambda: any(topic == "celeryev" for topic, _ in _broker_objects(stack)[1] - subscriptions_before),
                 60, "Flower's event queue subscribed to celeryev")

        job = jobs.submit(
            jobs.chain(
                jobs.step("storage", "put", name="store", key="monitoring/a.csv", content="code,amount\n01,10\n"),
                jobs.step("table", "load", name="load", table="monitoring_a", key="monitoring/a.csv"),
                jobs.step("query", "run", name="query", sql="select count(*) as n from monitoring_a"),
                jobs.step("catalog", "list", name="catalog"),
                jobs.step("transform", "ping", name="transform"),
                jobs.step("query", "run", name="broken", sql="select * from no_such_table"),
            ),
            name="monitored",
        )
        record = jobs.wait(job.job_id, timeout=120)
        assert record["status"] == "failed"
        steps = record["steps"]
        assert [s["status"] for s in steps] == ["succeeded"] * 5 + ["failed"], steps

        # Every task of the job, in its final state, with what Flower shows of it.
        def all_final() -> dict[str, Any]:
            tasks = flower.get("/api/tasks")
            # task-sent comes from whoever sent the task (here, or the previous step's worker):
            # it may arrive after the task finished.
            done = all(tasks.get(s["task_id"], {}).get("state") in FINAL and tasks[s["task_id"]].get("routing_key")
                       for s in steps)
            return tasks if done else {}

        tasks = wait_for(all_final, 120, "Flower's /api/tasks with every task of the job finished")
        for step in steps:
            task = tasks[step["task_id"]]
            handler = step["handler"]
            assert task["name"] == f"pudato.{handler}.execute"
            assert task["routing_key"] == f"pudato-{handler}"  # its queue, from task-sent
            assert task["worker"].startswith(f"{handler}@")
            assert f"'action': '{step['action']}'" in task["kwargs"]
            assert task["received"]
            assert task["started"]
            if step["status"] == "succeeded":
                assert task["state"] == "SUCCESS"
                assert task["runtime"] > 0
                assert step["id"] in task["result"]
                assert job.job_id in task["result"]
            else:
                assert task["state"] == "FAILURE"
                assert "no_such_table" in task["exception"]
                assert task["failed"] >= task["started"]

        # Every worker, each consuming its own queue (remote control: stats, active_queues...).
        workers = flower.get("/api/workers?refresh=1")
        by_pid = {info["stats"]["pid"]: (name, info) for name, info in workers.items()}
        for handler in HANDLERS:
            name, info = by_pid[stack.workers[handler].pid]
            assert name.startswith(f"{handler}@")
            assert [q["name"] for q in info["active_queues"]] == [f"pudato-{handler}"]
        # ...and online by their heartbeats (events).
        def all_online() -> dict[str, bool]:
            status = flower.get("/api/workers?status=1")
            online = {handler for handler in HANDLERS if any(n.startswith(f"{handler}@") and up
                                                             for n, up in status.items())}
            return status if online == set(HANDLERS) else {}

        wait_for(all_online, 60, "every worker online in Flower")

        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "workers.app", "inspect", "ping", "--timeout", "5", "--json"],
            env={**os.environ, **stack.env}, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )
        assert ping.returncode == 0, ping.stderr[-3000:]
        answers = json.loads(ping.stdout.strip().splitlines()[-1])
        assert {name.split("@")[0] for name in answers} >= set(HANDLERS), answers
        assert all(answer == {"ok": "pong"} for answer in answers.values()), answers
    finally:
        assert flower.stop() == 0, flower.log.read_text(errors="replace")[-3000:]

    # Nothing the monitors made remains: Flower's event queue and subscription, the reply queues.
    def unchanged() -> bool:
        return _broker_objects(stack) == (queues_before, subscriptions_before)

    try:
        wait_for(unchanged, 60, "the broker as it was before the monitors")
    except TimeoutError:
        queues, subscriptions = _broker_objects(stack)
        raise AssertionError(
            f"left behind: queues {sorted(queues - queues_before)}, "
            f"subscriptions {sorted(subscriptions - subscriptions_before)}"
        ) from None
