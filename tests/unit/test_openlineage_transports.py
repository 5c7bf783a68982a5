"""The OpenLineage transport is configured the OpenLineage way, and the emitter (given none) uses it.

An ``openlineage.yml`` in the working directory (type ``file``),
``OPENLINEAGE__TRANSPORT__TYPE=console`` and ``OPENLINEAGE_URL`` (http, to a real
local receiver): each makes Pudato emit (``LineageSettings.emits``) and each
carries a recorded step's events where it says.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.transport.console import ConsoleTransport
from openlineage.client.transport.file import FileTransport
from openlineage.client.transport.http import HttpTransport

from pudato.lineage.emitter import LineageEmitter
from pudato.registry.migrate import upgrade
from pudato.registry.recorder import StepRecorder
from pudato.registry.repository import Registry, StepPlan, StepUpdate
from pudato.settings import Settings

JOB, STEP = str(uuid.uuid4()), str(uuid.uuid4())
EXPECTED = [(JOB, "START"), (STEP, "START"), (STEP, "COMPLETE"), (JOB, "COMPLETE")]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return Registry(url)


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No OpenLineage configuration from the environment or home; the working directory is a fresh folder."""
    for name in [name for name in os.environ if name.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert not Settings(_env_file=None).lineage.emits()
    return work


def _emit(registry: Registry) -> LineageEmitter:
    """One step (started, finished) recorded; the emitter finds its transport itself."""
    registry.create_job(JOB, [StepPlan(step_id=STEP, handler="query", action="run", position=0)], name="probe")
    emitter = LineageEmitter(registry, "pudato", None)
    recorder = StepRecorder(registry, None, on_written=emitter.observe)
    recorder.record(StepUpdate(event="started", step_id=STEP, job_id=JOB, handler="query", action="run"))
    recorder.record(StepUpdate(event="finished", step_id=STEP, job_id=JOB, handler="query", action="run",
                               status="succeeded"))  # fmt: skip
    assert recorder.drain.flush(30)
    assert emitter.drain.flush(30)
    return emitter


def test_an_openlineage_yml_in_the_working_directory_writes_a_file(bare: Path, registry: Registry) -> None:
    target = bare / "events.jsonl"
    (bare / "openlineage.yml").write_text(f"transport:\n  type: file\n  log_file_path: {target}\n  append: true\n")
    assert Settings(_env_file=None).lineage.emits()
    emitter = _emit(registry)
    assert isinstance(emitter.transport, FileTransport)
    sent = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(e["run"]["runId"], e["eventType"]) for e in sent] == EXPECTED


def test_openlineage_transport_type_console_logs_the_events(
    bare: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    assert Settings(_env_file=None).lineage.emits()
    with caplog.at_level(logging.INFO, logger="openlineage.client.transport.console"):
        emitter = _emit(registry)
    assert isinstance(emitter.transport, ConsoleTransport)
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "openlineage.client.transport.console"]
    assert [(e["run"]["runId"], e["eventType"]) for e in logged] == EXPECTED


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_openlineage_url_sends_the_events_over_http(
    bare: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    monkeypatch.setenv("OPENLINEAGE_URL", url)
    assert Settings(_env_file=None).lineage.emits()
    emitter = _emit(registry)
    assert isinstance(emitter.transport, HttpTransport)
    assert [(e["run"]["runId"], e["eventType"]) for e in received] == EXPECTED


def test_openlineage_disabled_wins(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not Settings(_env_file=None).lineage.emits()
