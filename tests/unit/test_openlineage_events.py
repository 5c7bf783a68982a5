"""OpenLineage events from recorded steps: valid against the spec, in order, spooled when undeliverable."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from openlineage.client.serde import Serde
from openlineage.client.transport import Transport
from openlineage.client.transport.file import FileConfig, FileTransport

from pudato import datasets
from pudato.lineage.emitter import LineageEmitter, from_json, to_json
from pudato.registry.migrate import upgrade
from pudato.registry.recorder import StepRecorder
from pudato.registry.repository import Registry, StepPlan, StepUpdate

SHA = "c" * 40
REPO = "https://example.org/analysts/logic.git"
JOB = str(uuid.uuid4())
LOAD, BUILD = str(uuid.uuid4()), str(uuid.uuid4())
COLUMNS = [{"name": "dept", "type": "VARCHAR"}, {"name": "amount", "type": "DOUBLE"},
           {"name": "_pudato_job_id", "type": "VARCHAR"}]


class Collecting(Transport):
    kind = "collecting"

    def __init__(self, down: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.down = down

    def emit(self, event: Any) -> None:
        if self.down:
            self.down -= 1
            raise requests.ConnectionError("receiver away")
        self.events.append(json.loads(Serde.to_json(event)))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return Registry(url)


def _demo_updates() -> list[StepUpdate]:
    csv = datasets.s3_object("raw", "budget/revenue.csv", version="v1", size=120, sha256="ab")
    raw = datasets.lake_table("lake", "raw.revenue", snapshot_id=3, rows=4, columns=COLUMNS)
    stg = datasets.lake_table("lake", "main.stg_revenue", snapshot_id=4, rows=4, columns=COLUMNS,
                              derived_from=[{"namespace": raw.namespace, "name": raw.name}])
    nodes = [{"unique_id": "model.la.stg_revenue", "relation": "main.stg_revenue", "path": "models/stg_revenue.sql",
              "compiled_code": "select dept, amount from raw.revenue", "status": "success"}]
    tests = [{"unique_id": "test.la.not_null_stg_revenue_dept.1a", "status": "pass", "test_name": "not_null",
              "column": "dept", "attached_node": "model.la.stg_revenue", "models": ["model.la.stg_revenue"]}]
    common = {"job_id": JOB}
    return [
        StepUpdate(event="started", step_id=LOAD, handler="table", action="load", name="load", **common),
        StepUpdate(event="finished", step_id=LOAD, handler="table", action="load", name="load", status="succeeded",
                   inputs=[csv], outputs=[raw], **common),
        StepUpdate(event="started", step_id=BUILD, handler="transform", action="build", name="build", **common),
        StepUpdate(event="finished", step_id=BUILD, handler="transform", action="build", name="build",
                   status="succeeded", inputs=[raw], outputs=[stg], logic_version=SHA,
                   executions=[{"engine": "dbt", "statement": "dbt build"}], data={"nodes": nodes, "tests": tests},
                   **common),
    ]


def _record(registry: Registry, transport: Transport, updates: list[StepUpdate], spool: Path | None = None,
            steps: tuple[str, ...] = (LOAD, BUILD)) -> LineageEmitter:
    registry.create_job(JOB, [StepPlan(step_id=s, handler="table", action="load", position=i)
                              for i, s in enumerate(steps)],
                        name="la_revenue", logic_repo=REPO, logic_version=SHA)
    emitter = LineageEmitter(registry, "pudato", spool, transport)
    recorder = StepRecorder(registry, None, on_written=emitter.observe)
    for update in updates:
        recorder.record(update)
    assert recorder.drain.flush(30)
    return emitter


def test_a_demo_like_job_sends_valid_events_in_order(registry, openlineage_validate):
    transport = Collecting()
    emitter = _record(registry, transport, _demo_updates())
    assert emitter.drain.flush(30)
    events = transport.events
    for event in events:
        openlineage_validate(event)
    kinds = [(e["job"]["name"], e["eventType"]) for e in events]
    assert kinds == [("la_revenue", "START"), ("la_revenue.load", "START"), ("la_revenue.load", "COMPLETE"),
                     ("la_revenue.build", "START"), ("la_revenue.build", "COMPLETE"), ("la_revenue", "COMPLETE")]
    assert [e["run"]["runId"] for e in events[1:3]] == [LOAD, LOAD]
    assert events[0]["run"]["runId"] == JOB
    assert all(e["run"]["facets"]["parent"]["run"]["runId"] == JOB for e in events[1:5])
    build = events[4]
    location = build["job"]["facets"]["sourceCodeLocation"]
    assert (location["url"], location["version"], location["path"]) == (REPO, SHA, "models/stg_revenue.sql")
    assert build["job"]["facets"]["sql"]["query"] == "select dept, amount from raw.revenue"
    assert build["run"]["facets"]["processing_engine"]["name"] == "dbt"
    [output] = build["outputs"]
    assert output["facets"]["version"]["datasetVersion"] == "4"
    assert [f["name"] for f in output["facets"]["schema"]["fields"]][:2] == ["dept", "amount"]
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 4
    assert output["facets"]["dataQualityAssertions"]["assertions"][0]["assertion"] == "not_null"
    lineage = output["facets"]["columnLineage"]["fields"]
    assert sorted(lineage) == ["amount", "dept"]
    assert lineage["dept"]["inputFields"][0]["name"] == "raw.revenue"
    load_inputs = events[2]["inputs"]
    assert load_inputs[0]["facets"]["version"]["datasetVersion"] == "v1"


def test_a_failed_step_sends_fail_with_its_error(registry, openlineage_validate):
    transport = Collecting()
    error = {"type": "QueryFailed", "message": "Binder Error: no_such_column"}
    updates = [StepUpdate(event="started", step_id=LOAD, job_id=JOB, handler="query", action="run"),
               StepUpdate(event="finished", step_id=LOAD, job_id=JOB, handler="query", action="run",
                          status="failed", error=error, payload={"sql": "select no_such_column"})]
    emitter = _record(registry, transport, updates, steps=(LOAD,))
    assert emitter.drain.flush(30)
    for event in transport.events:
        openlineage_validate(event)
    fail = transport.events[2]
    assert fail["eventType"] == "FAIL"
    assert "no_such_column" in fail["run"]["facets"]["errorMessage"]["message"]
    assert fail["job"]["facets"]["sql"]["query"] == "select no_such_column"
    assert transport.events[-1]["eventType"] == "FAIL"
    assert transport.events[-1]["run"]["runId"] == JOB


def test_a_dead_lettered_step_sends_abort(registry, openlineage_validate):
    transport = Collecting()
    dead = StepUpdate(event="finished", step_id=LOAD, job_id=JOB, handler="table", action="load", status="failed",
                      error={"type": "DeadLettered", "message": "moved to pudato-table-dlq"})
    emitter = _record(registry, transport, [dead], steps=(LOAD,))
    assert emitter.drain.flush(30)
    step_events = [e for e in transport.events if e["run"]["runId"] == LOAD]
    assert [e["eventType"] for e in step_events] == ["ABORT"]
    openlineage_validate(step_events[0])


def test_an_unreachable_receiver_is_retried_and_nothing_is_lost(registry):
    transport = Collecting(down=3)
    emitter = _record(registry, transport, _demo_updates())
    assert emitter.drain.flush(60)
    assert len(transport.events) == 6
    assert transport.events[0]["eventType"] == "START"


def test_undelivered_events_are_spooled_and_sent_by_the_next_emitter(registry, tmp_path):
    spool = tmp_path / "spool"
    down = Collecting(down=10_000)
    emitter = _record(registry, down, _demo_updates(), spool=spool)
    emitter.drain.close(timeout=0.5)
    assert list(spool.glob("openlineage-*.jsonl"))
    target = tmp_path / "events"
    file_transport = FileTransport(FileConfig(log_file_path=str(target), append=True))
    later = LineageEmitter(registry, "pudato", spool, file_transport)
    later.drain.put(from_json(to_json(_a_start())))
    assert later.drain.flush(30)
    sent = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(sent) == 7
    assert [e["eventType"] for e in sent[:2]] == ["START", "START"]


def _a_start() -> Any:
    from pudato.lineage.events import JobContext, step_event

    update = StepUpdate(event="started", step_id=str(uuid.uuid4()), job_id=JOB, handler="query", action="run")
    return step_event(update, JobContext(job_id=JOB), "pudato")
