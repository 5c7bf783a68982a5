"""Plain helpers shared by the test files (``from helpers import git, wait_for``).

pytest puts ``tests/`` on ``sys.path`` because ``tests/conftest.py`` lives there, so every
test file can import this module; fixtures stay in the conftest files.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

AUTHOR = ("Analyst", "analyst@example.org")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    A pass or fail waits on the condition, never on a fixed sleep: on a busy machine the
    condition simply takes longer, so give ``timeout`` room to spare.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} (not within {timeout:g}s; last: {value!r})")
        time.sleep(interval)


def git(repo: Path | str, *args: str, author: tuple[str, str] = AUTHOR) -> str:
    """Run git in ``repo`` as ``author`` (no global git config needed); returns its stripped stdout."""
    name, email = author
    command = ["git", "-C", str(repo), "-c", f"user.name={name}", "-c", f"user.email={email}", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def subscribed_queue(stack: Any, topic: str, name: str) -> str:
    """A queue of the test's own subscribed to SNS ``topic`` (raw delivery): other tests cannot drain it."""
    sqs, sns = stack.client("sqs"), stack.client("sns")
    url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic_arn = sns.create_topic(Name=topic)["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return url


def drain(stack: Any, url: str, settle_s: float = 3.0) -> list[str]:
    """Every message body on ``url`` until it has been quiet for ``settle_s``; each is deleted."""
    sqs = stack.client("sqs")
    bodies: list[str] = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settle_s:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if messages:
            quiet_since = time.monotonic()
    return bodies


class CountingListener:
    """A TCP server on 127.0.0.1 that counts the connections it accepts (``close()`` when done)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.server.close()


def commit(repo: Path, files: dict[str, str], message: str = "logic") -> str:
    """Write ``files`` (path in the repository: text) into ``repo`` and commit them; returns the SHA.

    A folder that is not a repository yet becomes one, on branch ``main``.
    """
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")
