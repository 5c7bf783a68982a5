"""The local stack as `make stack` runs it: honcho, the Procfile and a .env made from .env.example.

These tests start their own processes (not the session's `stack` fixture): the whole
Procfile under honcho in a temp folder, on free ports, and moto alone for its state.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from pudato.devstack import free_port
from pudato.errors import NotFound
from pudato.protocol import HANDLERS
from pudato.registry.database import get_engine
from pudato.registry.repository import Registry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's: honcho, pudato, celery
FLOWER_LOGIN = "admin:stack-test-login"
SUBMIT = """
from workers.storage import execute
result = execute.delay(command={"action": "put", "payload": {"key": "a.txt", "content": "x"}})
print(result.id)
"""
# A table load of people.csv and a query of it, on the stack's lake (PostgreSQL catalog, data in moto's S3).
SUBMIT_LAKE = """
from pudato import jobs
from workers.app import app
job = jobs.chain(
    jobs.step("table", "load", table="people", key="people.csv"),
    jobs.step("query", "run", sql="select count(*), sum(amount) from people"),
)
print(jobs.submit(job, app=app).job_id)
"""


@pytest.fixture()
def root() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pudato-stack-")).resolve()
    try:
        yield folder
    finally:
        for pid, _ in _processes_in(folder):  # only if a test failed half-way: what it started, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


class Honcho:
    """`pudato local stack` (honcho start, as `make stack` runs it) in its own session, its output collected."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.log = open(root / "honcho.log", "a")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(
            [str(BIN / "pudato"), "local", "stack"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self.log.write(line + "\n")
            self.log.flush()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            if self.process.poll() is not None:
                pytest.fail(f"honcho exited ({self.process.returncode}) before {what}:\n{self.output()[-6000:]}")
            time.sleep(0.2)
        pytest.fail(f"no {what} within {timeout:.0f}s:\n{self.output()[-6000:]}")

    def started(self, process: str, pattern: str) -> bool:
        expression = re.compile(rf"\b{re.escape(process)}\.1\s*\|.*{pattern}")
        return any(expression.search(line) for line in self.lines)

    def wait_ready(self, timeout: float = 90) -> None:
        self.wait_for("'infrastructure ready'", lambda: self.started("infra", "infrastructure ready"), timeout)
        for handler in HANDLERS:
            self.wait_for(
                f"the {handler} worker's 'ready.'", lambda h=handler: self.started(h, rf"{h}@\S+ ready\."), timeout
            )

    def interrupt(self, timeout: float = 30) -> float:
        """Ctrl-C: SIGINT to honcho's process group. Returns how long it took to exit."""
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"honcho did not exit within {timeout:.0f}s of SIGINT:\n{self.output()[-6000:]}")
        elapsed = time.monotonic() - started
        self.reader.join(10)
        self.log.close()
        return elapsed


def _processes_in(folder: Path) -> list[tuple[int, str]]:
    """Processes whose working directory is in ``folder``: everything the stack started there."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone, or a zombie
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append((int(entry.name), command))
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stack_env(root: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """.env from .env.example with free ports and state under ``root``; the environment for honcho."""
    ports = {"moto": free_port(), "postgres": free_port(), "flower": free_port()}
    while len(set(ports.values())) < 3:
        ports["flower"] = free_port()
    state = root / ".pudato"
    registry_url = f"postgresql+psycopg2://postgres@127.0.0.1:{ports['postgres']}/pudato"
    overrides = {
        "STACK_MOTO_PORT": str(ports["moto"]),
        "STACK_POSTGRES_PORT": str(ports["postgres"]),
        "STACK_FLOWER_PORT": str(ports["flower"]),
        "PUDATO_AWS__ENDPOINT_URL": f"http://127.0.0.1:{ports['moto']}",
        "PUDATO_REGISTRY__URL": registry_url,
        "PUDATO_REGISTRY__SPOOL_DIR": str(state / "spool"),
        "PUDATO_STORAGE__LOCAL_ROOT": str(state / "storage"),
        "PUDATO_WAREHOUSE__PATH": str(state / "warehouse.duckdb"),
        "PUDATO_LOGIC__CACHE_DIR": str(state / "logic"),
        "PUDATO_WORKER__LIVENESS_DIR": str(state / "liveness"),
        "PUDATO_FLOWER__BASIC_AUTH": FLOWER_LOGIN,  # blank in .env.example; `make stack` generates one
    }
    lines, seen = [], set()
    for line in (REPO / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        if not line.startswith("#") and name in overrides:
            line, _ = f"{name}={overrides[name]}", seen.add(name)
        lines.append(line)
    assert seen == set(overrides), f".env.example lacks {sorted(set(overrides) - seen)}"
    (root / ".env").write_text("\n".join(lines) + "\n")
    shutil.copy(REPO / "Procfile", root / "Procfile")
    # The session's integration stack may have put its PUDATO_* into this process's environment.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUDATO_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as `make stack` does
    return env, {"ports": ports, "registry_url": registry_url, "endpoint": overrides["PUDATO_AWS__ENDPOINT_URL"]}


def _wait_step(registry: Registry, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = registry.job(job_id)
            if job["steps"] and job["steps"][0]["status"] in ("succeeded", "failed"):
                return job
        except NotFound:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"step {job_id} not finished in the registry within {timeout:.0f}s")


def _lake_job(
    root: Path, env: dict[str, str], registry: Registry, timeout: float = 240, command: list[str] | None = None
) -> dict[str, Any]:
    """SUBMIT_LAKE (or ``command``) from another process, as an app would; the finished job from the registry."""
    submitted = subprocess.run(
        command or [sys.executable, "-c", SUBMIT_LAKE], cwd=root, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + timeout  # the first load also puts the lake's extensions in place
    while time.monotonic() < deadline:
        with contextlib.suppress(NotFound):
            job = registry.job(job_id)
            if job["status"] in ("succeeded", "failed") and all(s["status"] != "running" for s in job["steps"]):
                assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
                return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not finished in the registry within {timeout:.0f}s")


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_make_stack_runs_a_step_stops_on_ctrl_c_and_keeps_its_state(root: Path) -> None:
    env, stack = _stack_env(root)
    ports, registry = stack["ports"], Registry(stack["registry_url"])

    started = time.monotonic()
    honcho = Honcho(root, env)
    honcho.wait_ready()
    cold_start = time.monotonic() - started
    honcho.wait_for("Flower", lambda: _listening(ports["flower"]), 60)
    flower_page = urllib.request.Request(f"http://127.0.0.1:{ports['flower']}/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(flower_page, timeout=5)
    assert refused.value.code == 401
    flower_page.add_header("Authorization", "Basic " + base64.b64encode(FLOWER_LOGIN.encode()).decode())
    assert urllib.request.urlopen(flower_page, timeout=5).status == 200
    assert honcho.started("beat", "Starting"), honcho.output()[-3000:]

    # An app in another process sends one step with .delay(), configured by the same .env.
    submitted = subprocess.run(
        [sys.executable, "-c", SUBMIT], cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip().splitlines()[-1]
    job = _wait_step(registry, task_id)
    (step,) = job["steps"]
    assert (step["status"], step["handler"], step["action"]) == ("succeeded", "storage", "put"), step.get("error")
    assert step["worker"].startswith("storage@")
    assert _s3(stack["endpoint"]).get_object(Bucket="pudato", Key="a.txt")["Body"].read() == b"x"
    # Put straight into the stack's S3, not by a step of the job: a rerun runs its steps again, writes included.
    people = "id,name,amount\n" + "".join(f"{i},name {i},{i}\n" for i in range(1, 101))
    _s3(stack["endpoint"]).put_object(Bucket="pudato", Key="people.csv", Body=people.encode())
    lake_job = _lake_job(root, env, registry)
    load = next(s for s in lake_job["steps"] if s["handler"] == "table")
    (table,) = load["outputs"]
    assert table["namespace"].startswith("ducklake://")
    assert table["facets"]["rows"] == 100
    assert isinstance(table["facets"]["snapshot_id"], int)
    query = next(s for s in lake_job["steps"] if s["handler"] == "query")
    assert query["data"]["rows"] == [[100, 5050]]
    assert query["worker"].startswith("query@")
    recorded = load["inputs"][0]["facets"]["version"]
    more = "id,name,amount\n" + "".join(f"{i},name {i},{i}\n" for i in range(1, 151))
    _s3(stack["endpoint"]).put_object(Bucket="pudato", Key="people.csv", Body=more.encode())  # today's data differs
    get_engine(stack["registry_url"]).dispose()  # this test's connections: not the stack's business

    cold_stop = honcho.interrupt()
    output = honcho.output()
    assert cold_stop < 30
    # `pudato local stack` gives every process 30 s (honcho alone: 5) to stop, so even on a busy
    # machine the services that keep state stop cleanly.
    assert "postgres stopped" in output, output[-6000:]
    assert "saved moto's state" in output, output[-6000:]
    assert _processes_in(root) == []
    assert not any(_listening(port) for port in ports.values())

    # Started again: the registry (PostgreSQL's folder) and moto's objects and queues are still there.
    started = time.monotonic()
    honcho = Honcho(root, env)
    honcho.wait_ready()
    warm_start = time.monotonic() - started
    assert honcho.started("aws", r"restored moto's state .*1 buckets"), honcho.output()[-6000:]
    assert "created a PostgreSQL cluster" not in "\n".join(honcho.lines)
    assert registry.job(task_id)["status"] == "succeeded"
    s3 = _s3(stack["endpoint"])
    assert s3.get_object(Bucket="pudato", Key="a.txt")["Body"].read() == b"x"
    assert s3.get_bucket_versioning(Bucket="pudato")["Status"] == "Enabled"  # as infra up made it
    # An exact rerun across the restart reads people.csv at the version id the registry recorded.
    rerun = _lake_job(root, env, registry, command=[str(BIN / "pudato"), "rerun", lake_job["id"], "--no-wait"])
    reloaded = next(s for s in rerun["steps"] if s["handler"] == "table")
    assert reloaded["inputs"][0]["facets"]["version"] == recorded
    assert next(s for s in rerun["steps"] if s["handler"] == "query")["data"]["rows"] == [[100, 5050]]
    sns = boto3.client(
        "sns",
        endpoint_url=stack["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # infra up ran again over the restored state and did not double the fan-out's subscriptions.
    audit = [s["Endpoint"] for s in sns.list_subscriptions()["Subscriptions"] if s["Endpoint"].endswith("-audit")]
    assert sorted(audit) == [f"arn:aws:sqs:us-east-1:123456789012:pudato-{t}-audit" for t in ("events", "results")]
    get_engine(stack["registry_url"]).dispose()

    warm_stop = honcho.interrupt()
    assert "postgres stopped" in honcho.output(), honcho.output()[-6000:]
    assert _processes_in(root) == []
    assert not any(_listening(port) for port in ports.values())
    print(
        f"\nstack: cold start {cold_start:.1f}s, stop {cold_stop:.1f}s; "
        f"warm start {warm_start:.1f}s, stop {warm_stop:.1f}s"
    )


def test_moto_keeps_buckets_queues_messages_and_topics_across_restarts(root: Path) -> None:
    port, state = free_port(), root / "moto-state.json"
    endpoint = f"http://127.0.0.1:{port}"
    access = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }

    def start() -> tuple[subprocess.Popen[str], list[str]]:
        process = subprocess.Popen(
            [str(BIN / "pudato"), "local", "aws", "--port", str(port), "--state", str(state)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line.rstrip())
            if "moto ready" in line:
                return process, lines
        pytest.fail(f"moto exited ({process.wait()}):\n" + "\n".join(lines))

    def stop(process: subprocess.Popen[str], lines: list[str]) -> None:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
        lines += out.splitlines()
        assert process.returncode == 0, "\n".join(lines)

    process, lines = start()
    s3, sqs, sns = (boto3.client(name, **access) for name in ("s3", "sqs", "sns"))
    s3.create_bucket(Bucket="kept")
    s3.put_bucket_versioning(Bucket="kept", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="kept", Key="raw/a.csv", Body=b"one", ContentType="text/csv", Metadata={"source": "la"})
    s3.put_object(Bucket="kept", Key="raw/a.csv", Body=b"two")
    s3.put_object(Bucket="kept", Key="gone.txt", Body=b"x")
    s3.delete_object(Bucket="kept", Key="gone.txt")
    dlq = sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    work = sqs.create_queue(
        QueueName="work", Attributes={"VisibilityTimeout": "77", "RedrivePolicy": redrive}, tags={"team": "data"}
    )["QueueUrl"]
    sqs.send_message(
        QueueUrl=work, MessageBody="waiting", MessageAttributes={"kind": {"DataType": "String", "StringValue": "step"}}
    )
    sqs.send_message(QueueUrl=work, MessageBody="in flight")
    sqs.send_message(QueueUrl=work, MessageBody="done")
    received = sqs.receive_message(QueueUrl=work, MaxNumberOfMessages=10, VisibilityTimeout=60)["Messages"]
    for message in received:
        if message["Body"] == "done":
            sqs.delete_message(QueueUrl=work, ReceiptHandle=message["ReceiptHandle"])
        elif message["Body"] == "waiting":
            sqs.change_message_visibility(QueueUrl=work, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    topic = sns.create_topic(Name="events", Attributes={"DisplayName": "events"})["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=dlq_arn, Attributes={"RawMessageDelivery": "true"})
    stop(process, lines)
    assert state.exists()
    assert any("saved moto's state" in line and "2 messages" in line for line in lines), lines

    process, lines = start()
    try:
        assert any("restored moto's state" in line for line in lines), lines
        s3, sqs, sns = (boto3.client(name, **access) for name in ("s3", "sqs", "sns"))
        assert s3.get_object(Bucket="kept", Key="raw/a.csv")["Body"].read() == b"two"
        versions = s3.list_object_versions(Bucket="kept")
        older = [v for v in versions["Versions"] if v["Key"] == "raw/a.csv" and not v["IsLatest"]]
        assert len(older) == 1
        first = s3.get_object(Bucket="kept", Key="raw/a.csv", VersionId=older[0]["VersionId"])
        assert (first["Body"].read(), first["ContentType"], first["Metadata"]) == (b"one", "text/csv", {"source": "la"})
        assert [m["Key"] for m in versions["DeleteMarkers"]] == ["gone.txt"]  # still deleted
        work = sqs.get_queue_url(QueueName="work")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["All"])["Attributes"]
        assert attributes["VisibilityTimeout"] == "77"
        assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn
        assert sqs.list_queue_tags(QueueUrl=work)["Tags"] == {"team": "data"}
        messages = sqs.receive_message(QueueUrl=work, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        # Not deleted: the waiting one and the one in flight, both visible again; the deleted one is gone.
        bodies = {m["Body"]: m for m in messages["Messages"]}
        assert set(bodies) == {"waiting", "in flight"}
        assert bodies["waiting"]["MessageAttributes"]["kind"]["StringValue"] == "step"
        (subscription,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert subscription["Endpoint"] == dlq_arn
        attributes = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])["Attributes"]
        assert attributes["RawMessageDelivery"] == "true"
        assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["DisplayName"] == "events"
    finally:
        stop(process, lines)
