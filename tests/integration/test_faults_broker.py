"""Fault suite, broker: moto SIGKILLed mid-job and started again; every worker carries on.

This test runs its own moto (``pudato local aws``, which keeps its state across
restarts) and its own workers, one per queue, on the session's PostgreSQL, so
that killing the broker harms nothing else. moto is SIGKILLed while a query
step runs, and started again on the same port from its saved state: the step
finishes meanwhile, its next step is published once moto answers, the job
completes, and every worker consumes again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pudato import devstack, jobs
from pudato.protocol import HANDLERS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SLOW_SQL = "select sum(i * i % 7) as s from range(150000000) t(i)"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class Broker:
    """moto via ``pudato local aws`` on a fixed port, its state kept in ``state``."""

    def __init__(self, folder: Path) -> None:
        self.port = devstack.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.state = folder / "moto-state.json"
        self.log = folder / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pudato", "local", "aws", "--port", str(self.port), "--state", str(self.state)],
                stdout=log, stderr=log, cwd=REPO, start_new_session=True)
        wait_for(lambda: "moto ready" in self.log.read_text(errors="replace").split("--- start ---")[-1], 120,
                 "moto did not start")

    def mark(self) -> None:
        with self.log.open("a") as log:
            log.write("--- start ---\n")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            devstack.stop(self.process)


@pytest.fixture(scope="module")
def own_broker(stack, tmp_path_factory) -> Iterator[tuple[Broker, dict, object, dict]]:
    folder = tmp_path_factory.mktemp("broker-faults")
    broker = Broker(folder)
    broker.mark()
    broker.start()
    env = {**stack.env, "PUDATO_AWS__ENDPOINT_URL": broker.endpoint, "PUDATO_WAREHOUSE__BACKEND": "duckdb",
           "PUDATO_WAREHOUSE__PATH": str(folder / "warehouse.duckdb"),
           "PUDATO_REGISTRY__SPOOL_DIR": str(folder / "spool"),
           "PUDATO_WORKER__LIVENESS_DIR": str(folder / "liveness")}
    subprocess.run([sys.executable, "-m", "pudato", "infra", "up"], env={**os.environ, **env}, cwd=REPO,
                   check=True, capture_output=True)
    broker.stop()  # a clean stop saves the state that every later start restores
    broker.mark()
    broker.start()
    from celery import Celery

    app = Celery("pudato", control="workers.monitoring:Control", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.broker_url = f"sqs://testing:testing@127.0.0.1:{broker.port}"
    try:
        with devstack.workers(env, log_dir=folder / "logs", cwd=REPO) as processes:
            yield broker, env, app, processes
    finally:
        app.close()
        broker.stop()


def test_moto_killed_mid_job_and_restarted_every_worker_carries_on(stack, own_broker):
    broker, _env, app, processes = own_broker
    job = jobs.submit(jobs.chain(
        jobs.step("storage", "put", key="faults/broker/a.csv", content="n\n1\n"),
        jobs.step("query", "run", sql=SLOW_SQL),
        jobs.step("storage", "put", key="faults/broker/b.csv", content="n\n2\n"),
    ), app=app, name="broker fault")
    wait_for(lambda: stack.registry.job(job.job_id)["steps"][1]["status"] == "running", 120,
             "the query step never started")
    broker.kill()
    logs = [Path(p.log_file) for p in processes.values()]
    wait_for(lambda: sum("SQS did not answer a poll" in log.read_text(errors="replace") for log in logs) >= 3, 60,
             "the workers did not notice that moto was gone")
    broker.mark()
    broker.start()
    record = jobs.wait(job.job_id, timeout=300)
    assert record["status"] == "succeeded", record["steps"]
    alive = {handler: process.poll() is None for handler, process in processes.items()}
    assert alive == dict.fromkeys(HANDLERS, True)
    assert not [log.name for log in logs if "Unrecoverable error" in log.read_text(errors="replace")]
    pings = jobs.submit(jobs.group(*[jobs.step(handler, "ping") for handler in HANDLERS]), app=app)
    again = jobs.wait(pings.job_id, timeout=180)
    assert [s["status"] for s in again["steps"]] == ["succeeded"] * len(HANDLERS)


def test_a_worker_started_while_sqs_is_away_waits_for_it_then_consumes(stack, own_broker):
    broker, env, app, _processes = own_broker
    broker.stop()  # a clean stop: its state is saved, and restored below
    late = devstack.start_worker("storage", env, name="late", log_dir=broker.log.parent / "late")
    try:
        log = Path(late.log_file)
        wait_for(lambda: "Trying again" in log.read_text(errors="replace"), 120,
                 "the worker did not retry its connection")
        assert late.poll() is None
        broker.mark()
        broker.start()
        devstack.wait_for_worker(late, "storage", timeout=180)
        job = jobs.submit(jobs.group(*[jobs.step("storage", "ping") for _ in range(4)]), app=app)
        record = jobs.wait(job.job_id, timeout=120)
        assert record["status"] == "succeeded"
        assert late.poll() is None
        assert "Unrecoverable error" not in log.read_text(errors="replace")
    finally:
        devstack.stop(late)
