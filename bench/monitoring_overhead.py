"""What monitoring costs: ping steps with events and remote control on against off.

Same moto, same PostgreSQL, one storage worker (prefork, ``-c 2``, heartbeats
every 30 s as ``pudato.devstack`` starts it) started with
``PUDATO_BROKER__MONITORING=false`` then ``=true``, round after round, so that
both see the same moto. In the "on" rounds the client sends ``task-sent``
events too, and a monitor consumes every event (an event receiver in this
process, as Flower's). Each round sends a batch of ``storage.ping`` steps and
waits for them through the result backend.

Besides the rates and their ratio, it counts what the events cost: the SQS
messages the monitor received, one per SNS message on ``celeryev`` (one
monitor: one queue subscribed), per step; the SNS calls the worker made (it
logs them as it stops) and the client made. Idle, with five workers and Flower
running, per worker per minute: the heartbeat messages, and the control
messages on ``celery-pidbox`` (counted by a queue of its own subscribed to it).

    .venv/bin/python bench/monitoring_overhead.py [N_PER_BATCH] [ROUNDS] [IDLE_SECONDS]
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, bench_stack
from pudato import aws, devstack
from pudato.protocol import HANDLERS

CONTROL_TOPIC = "celery-pidbox"


class ControlCounter:
    """A plain SQS queue subscribed to the control topic: its depth is what the topic published."""

    def __init__(self, settings: Any) -> None:
        self.sqs, self.sns = aws.client("sqs", settings.aws), aws.client("sns", settings.aws)
        arn = self.sns.create_topic(Name=CONTROL_TOPIC)["TopicArn"]
        self.url = self.sqs.create_queue(QueueName=f"bench-count-{CONTROL_TOPIC}")["QueueUrl"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]
        queue_arn = attributes["QueueArn"]
        self.subscription = self.sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn,
                                               Attributes={"RawMessageDelivery": "true"},
                                               ReturnSubscriptionArn=True)["SubscriptionArn"]

    def read(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def close(self) -> None:
        self.sns.unsubscribe(SubscriptionArn=self.subscription)
        self.sqs.delete_queue(QueueUrl=self.url)


class Monitor(threading.Thread):
    """Consumes every event, as Flower does; counts the messages (one per SNS message) and events."""

    def __init__(self, app: Any) -> None:
        super().__init__(daemon=True)
        self.app, self.ready = app, threading.Event()
        self.messages = self.events = self.heartbeats = 0
        self.receiver: Any = None

    def run(self) -> None:
        monitor = self

        class Counting(self.app.events.Receiver):  # type: ignore[name-defined,misc]
            def _receive(self, body: Any, message: Any) -> None:
                monitor.messages += 1
                super()._receive(body, message)

        with self.app.connection() as connection:
            self.receiver = Counting(connection, handlers={"*": self._count})
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def _count(self, event: dict[str, Any]) -> None:
        self.events += 1
        self.heartbeats += event.get("type") == "worker-heartbeat"

    def counts(self) -> tuple[int, int, int]:
        return self.messages, self.events, self.heartbeats

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(15)


def _worker_sns_calls(log_dir: Path) -> tuple[int, int]:
    messages = calls = 0
    for path in log_dir.glob("*.log"):
        for found in re.finditer(r"published (\d+) event message\(s\) to SNS in (\d+) PublishBatch",
                                 path.read_text(errors="replace")):
            messages, calls = messages + int(found.group(1)), calls + int(found.group(2))
    return messages, calls


def _idle_cost(stack: dict[str, Any], app: Any, counter: ControlCounter, seconds: float) -> dict[str, float]:
    """Five workers, Flower and a monitor, doing nothing for ``seconds``: per worker per minute."""
    env = {**stack["env"], "PUDATO_BROKER__MONITORING": "true"}
    with devstack.workers(env, handlers=HANDLERS, log_dir=stack["state"] / "logs-idle", cwd=REPO):
        port = devstack.free_port()
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}", "--address=127.0.0.1"],
            env={**os.environ, **env, "FLOWER_UNAUTHENTICATED_API": "true"}, cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        monitor = Monitor(app)
        monitor.start()
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workers", timeout=5).read())
                    break
                except OSError:
                    if time.monotonic() > deadline or flower.poll() is not None:
                        raise
                    time.sleep(0.2)
            time.sleep(5)  # past Flower's start: its first inspect and the heartbeats it asks for
            control, (messages, _, heartbeats) = counter.read(), monitor.counts()
            time.sleep(seconds)
            control_after, (messages_after, _, heartbeats_after) = counter.read(), monitor.counts()
        finally:
            monitor.stop()
            flower.send_signal(signal.SIGTERM)
            flower.wait(30)
    per_worker_minute = len(HANDLERS) * seconds / 60
    return {
        "event_messages": (messages_after - messages) / per_worker_minute,
        "heartbeats": (heartbeats_after - heartbeats) / per_worker_minute,
        "control_total": (control_after - control) * 60 / seconds,
    }


def main(per_batch: int = 150, rounds: int = 3, idle_s: float = 60.0) -> None:
    with bench_stack((), include=None) as stack:
        from celery.result import ResultSet

        from workers import transport
        from workers.app import app
        from workers.storage import execute

        def timed(count: int) -> float:
            start = time.perf_counter()
            results = ResultSet([execute.delay(command={"action": "ping"}) for _ in range(count)])
            results.join(timeout=600, propagate=False)
            return count / (time.perf_counter() - start)

        def client_sns() -> tuple[int, int]:
            return (sum(p.messages for p in list(transport._publishers)),
                    sum(p.calls for p in list(transport._publishers)))

        warm_up = max(per_batch // 5, 10)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cost = {"messages": 0, "events": 0, "steps": 0, "client_messages": 0, "client_calls": 0}
        for round_ in range(rounds):
            for mode in ("off", "on"):
                on = mode == "on"
                env = {**stack["env"], "PUDATO_BROKER__MONITORING": "true" if on else "false"}
                app.conf.task_send_sent_event = on
                log_dir = stack["state"] / f"logs-{mode}-{round_}"
                with devstack.workers(env, handlers=("storage",), concurrency=2, log_dir=log_dir, cwd=REPO):
                    monitor = Monitor(app) if on else None
                    if monitor:
                        monitor.start()
                        monitor.ready.wait(30)
                        time.sleep(2)  # its queue subscribed
                    timed(warm_up)
                    time.sleep(1)
                    before, client_before = (monitor.counts() if monitor else None), client_sns()
                    rates[mode].append(timed(per_batch))
                    if monitor and before:
                        time.sleep(2)  # the last events out of the batch publishers (0.5 s) and received
                        messages, events, _ = monitor.counts()
                        cost["messages"] += messages - before[0]
                        cost["events"] += events - before[1]
                        cost["steps"] += per_batch
                        client_after = client_sns()
                        cost["client_messages"] += client_after[0] - client_before[0]
                        cost["client_calls"] += client_after[1] - client_before[1]
                        monitor.stop()
        off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
        worker_messages = worker_calls = 0
        for round_ in range(rounds):
            m, c = _worker_sns_calls(stack["state"] / f"logs-on-{round_}")
            worker_messages, worker_calls = worker_messages + m, worker_calls + c
        counter = ControlCounter(stack["settings"])
        idle = _idle_cost(stack, app, counter, idle_s) if idle_s > 0 else None
        counter.close()

        steps = cost["steps"] or 1
        print(f"batches: {rounds} x {per_batch} ping steps, worker prefork -c 2, broker moto SQS + SNS")
        print(f"monitoring off: {off:7.1f} steps/s  (rounds: {', '.join(f'{r:.1f}' for r in rates['off'])})")
        print(f"monitoring on : {on:7.1f} steps/s  (rounds: {', '.join(f'{r:.1f}' for r in rates['on'])})")
        print(f"ratio on/off  : {on / off:.2f}")
        print("events, per step (monitoring on, one monitor consuming them):")
        print(f"  events                                  : {cost['events'] / steps:.2f}")
        print(f"  SNS messages on celeryev                : {cost['messages'] / steps:.2f}"
              "  (each one an SQS message in every monitor's queue)")
        if worker_calls:  # its log counts the warm-up batches too
            worker_steps = rounds * (per_batch + warm_up)
            print(f"  SNS PublishBatch calls by the worker    : {worker_calls / worker_steps:.3f}"
                  f"  ({worker_messages / worker_calls:.1f} messages a call)")
        if cost["client_calls"]:
            print(f"  SNS PublishBatch calls by the client    : {cost['client_calls'] / steps:.3f}"
                  f"  ({cost['client_messages'] / cost['client_calls']:.1f} messages a call: task-sent)")
        if idle:
            print(f"idle, {len(HANDLERS)} workers (heartbeat every 30 s), Flower and a monitor, {idle_s:.0f} s:")
            print(f"  heartbeats, per worker per minute                  : {idle['heartbeats']:.2f}"
                  f"  ({idle['event_messages']:.2f} SNS messages on celeryev)")
            print(f"  control messages on celery-pidbox, a minute        : {idle['control_total']:.2f}"
                  "  (Flower's enable_events every 5 s; each one an SQS message in every worker's mailbox)")


if __name__ == "__main__":
    arguments = sys.argv[1:4]
    main(*(int(a) for a in arguments[:2]), *(float(a) for a in arguments[2:3]))
