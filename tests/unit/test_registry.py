"""The registry's repository on SQLite: roll-up, lineage edges, catalog, .delay() jobs."""

from __future__ import annotations

import pytest

from pudato import datasets
from pudato.errors import NotFound
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry, StepPlan, StepUpdate, rollup


@pytest.fixture
def registry(tmp_path) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return Registry(url)


def _update(event, step_id, job_id="job-1", **fields):
    return StepUpdate(event=event, step_id=step_id, job_id=job_id, handler="table", action="load", **fields)


@pytest.mark.parametrize(
    ("statuses", "count", "expected"),
    [
        ([], 2, "pending"),
        (["pending", "running"], 2, "running"),
        (["succeeded", "pending"], 2, "running"),
        (["succeeded", "succeeded"], 2, "succeeded"),
        (["succeeded"], 2, "running"),
        (["succeeded", "failed"], 2, "failed"),
    ],
)
def test_rollup(statuses, count, expected):
    assert rollup(statuses, count) == expected


def test_a_job_rolls_up_from_its_steps_and_records_lineage(registry):
    raw = datasets.s3_object("bucket", "raw/a.csv", sha256="abc")
    table = datasets.duckdb_table("warehouse", "raw_a", rows=2)
    registry.create_job("job-1", [StepPlan(step_id="s1", handler="storage", action="put"),
                                  StepPlan(step_id="s2", handler="table", action="load", position=1)])
    assert registry.apply(_update("started", "s1")) is None
    assert registry.job("job-1")["status"] == "running"
    assert registry.apply(_update("finished", "s1", status="succeeded", outputs=[raw])) is None
    registry.apply(_update("started", "s2"))
    finished = registry.apply(_update("finished", "s2", status="succeeded", inputs=[raw], outputs=[table]))
    assert finished == "succeeded"
    job = registry.job("job-1")
    assert job["status"] == "succeeded"
    assert job["finished_at"] is not None
    assert [s["attempts"] for s in job["steps"]] == [1, 1]
    (upstream,) = registry.lineage(table.namespace, table.name, "upstream")
    assert upstream["step_id"] == "s2"
    assert upstream["datasets"] == [{"namespace": "s3://bucket", "name": "raw/a.csv"}]
    (downstream,) = registry.lineage(raw.namespace, raw.name, "downstream")
    assert downstream["step_id"] == "s2"
    assert registry.get_dataset(table.namespace, table.name)["facets"] == {"rows": 2}


def test_a_failed_step_fails_the_job_and_keeps_its_error(registry):
    registry.create_job("job-1", [StepPlan(step_id="s1", handler="query", action="run")])
    registry.apply(_update("started", "s1"))
    error = {"type": "QueryFailed", "message": "Catalog Error: Table with name nope does not exist!"}
    assert registry.apply(_update("finished", "s1", status="failed", error=error)) == "failed"
    assert registry.job("job-1")["steps"][0]["error"] == error


def test_a_redelivered_message_does_not_undo_a_finished_step(registry):
    registry.create_job("job-1", [StepPlan(step_id="s1", handler="table", action="load")])
    registry.apply(_update("started", "s1", task_id="s1"))
    registry.apply(_update("finished", "s1", status="succeeded"))
    registry.apply(_update("started", "s1", task_id="s1"))
    step = registry.job("job-1")["steps"][0]
    assert step["status"] == "succeeded"
    assert step["attempts"] == 2


def test_a_delay_step_creates_its_own_job(registry):
    registry.apply(_update("started", "task-9", job_id="task-9"))
    registry.apply(_update("finished", "task-9", job_id="task-9", status="succeeded"))
    job = registry.job("task-9")
    assert job["trigger"] == "delay"
    assert job["status"] == "succeeded"
    assert job["step_count"] == 1


def test_catalog_register_search_and_missing(registry):
    registry.register_dataset("s3://b", "raw/revenue.csv", "LA revenue", ["budget"], {"owner": "finance"})
    registry.register_dataset("s3://b", "raw/revenue.csv", None, ["la"], {})
    found = registry.search_datasets("revenue")
    assert len(found) == 1
    assert found[0]["tags"] == ["budget", "la"]
    assert found[0]["description"] == "LA revenue"
    with pytest.raises(NotFound, match="not in the catalog"):
        registry.get_dataset("s3://b", "nope")


def test_lineage_traces_both_ways_and_honours_derived_from(registry):
    from pudato.lineage import trace

    csv = datasets.s3_object("b", "raw/a.csv")
    raw = datasets.duckdb_table("w", "raw_a")
    stg = datasets.duckdb_table("w", "stg_a", derived_from=[{"namespace": raw.namespace, "name": raw.name}])
    mart = datasets.duckdb_table("w", "fct_a", derived_from=[{"namespace": stg.namespace, "name": stg.name}])
    registry.create_job("job-1", [StepPlan(step_id="load", handler="table", action="load"),
                                  StepPlan(step_id="build", handler="transform", action="build", position=1)])
    registry.apply(_update("finished", "load", status="succeeded", inputs=[csv], outputs=[raw]))
    registry.apply(StepUpdate(event="finished", step_id="build", job_id="job-1", handler="transform", action="build",
                              status="succeeded", inputs=[raw], outputs=[stg, mart], logic_version="a" * 40))
    up = trace(registry, mart.namespace, mart.name, "upstream")
    assert [(e["source_name"], e["target_name"]) for e in up] == [
        ("main.stg_a", "main.fct_a"), ("main.raw_a", "main.stg_a"), ("raw/a.csv", "main.raw_a")]
    assert up[0]["logic_version"] == "a" * 40
    down = trace(registry, csv.namespace, csv.name, "downstream")
    assert [e["target_name"] for e in down] == ["main.raw_a", "main.stg_a", "main.fct_a"]
