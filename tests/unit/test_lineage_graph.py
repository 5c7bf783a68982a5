"""Lineage graphs from the registry (SQLite here, PostgreSQL in the benchmark): depth, as-of, formats, CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pudato import datasets
from pudato.lineage.formats import render
from pudato.lineage.graph import lineage_graph, resolve, trace
from pudato.protocol import utcnow
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry, StepPlan, StepUpdate

A, B = "a" * 40, "b" * 40


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    monkeypatch.setenv("PUDATO_REGISTRY__URL", url)
    return Registry(url)


def _run(registry: Registry, job: str, release: str, sha: str) -> None:
    """One run of a pipeline: load a release of a raw file, build staging and a mart from it."""
    csv = datasets.s3_object("raw", "budget/revenue.csv", version=release)
    raw = datasets.lake_table("lake", "raw.revenue", snapshot_id=f"s-{release}")
    stg = datasets.lake_table("lake", "main.stg", snapshot_id=f"t-{release}",
                              derived_from=[{"namespace": raw.namespace, "name": raw.name}])
    mart = datasets.lake_table("lake", "main.mart", snapshot_id=f"m-{release}",
                               derived_from=[{"namespace": stg.namespace, "name": stg.name}])
    lonely = datasets.lake_table("lake", "main.calendar", derived_from=[])
    registry.create_job(job, [StepPlan(step_id=f"{job}-load", handler="table", action="load"),
                              StepPlan(step_id=f"{job}-build", handler="transform", action="build", position=1)],
                        name="revenue", logic_version=sha)
    for step, handler, inputs, outputs in ((f"{job}-load", "table", [csv], [raw]),
                                           (f"{job}-build", "transform", [raw], [stg, mart, lonely])):
        registry.apply(StepUpdate(event="started", step_id=step, job_id=job, handler=handler, action="x"))
        registry.apply(StepUpdate(event="finished", step_id=step, job_id=job, handler=handler, action="x",
                                  status="succeeded", inputs=inputs, outputs=outputs, logic_version=sha,
                                  finished_at=utcnow()))


@pytest.fixture
def history(registry: Registry) -> Registry:
    _run(registry, "job-1", "v1", A)
    _run(registry, "job-2", "v2", B)
    return registry


def test_repeated_runs_add_no_links_and_depth_limits_the_walk(history):
    edges = trace(history, "ducklake://lake", "main.mart", "upstream")
    assert [(e["source_name"], e["target_name"], e["depth"]) for e in edges] == [
        ("main.stg", "main.mart", 1), ("raw.revenue", "main.stg", 2), ("budget/revenue.csv", "raw.revenue", 3)]
    assert edges[0]["runs"] == 2
    assert edges[0]["job_id"] == "job-2"
    assert len(trace(history, "ducklake://lake", "main.mart", "upstream", max_depth=2)) == 2
    down = trace(history, "s3://raw", "budget/revenue.csv", "downstream")
    assert [e["target_name"] for e in down] == ["raw.revenue", "main.stg", "main.mart"]


def test_as_of_a_job_names_the_release_it_read(history):
    graph = lineage_graph(history, "ducklake://lake", "main.mart", "upstream", as_of="job-1")
    source = graph.edges[-1]
    assert (source["source_name"], source["source_version"]) == ("budget/revenue.csv", "v1")
    graph = lineage_graph(history, "ducklake://lake", "main.mart", "upstream", as_of=B[:12])
    assert graph.edges[-1]["source_version"] == "v2"
    assert graph.edges[0]["target_version"] == "m-v2"
    assert lineage_graph(history, "ducklake://lake", "main.mart", "upstream", as_of="job-9").edges == []


def test_a_model_without_parents_still_appears(history):
    text = render(lineage_graph(history, "ducklake://lake", "main.calendar", "upstream"), "text")
    assert text.startswith("ducklake://lake/main.calendar (upstream)")
    assert "last written by job job-2" in text


def test_formats(history):
    graph = lineage_graph(history, "ducklake://lake", "main.mart", "upstream")
    mermaid = render(graph, "mermaid")
    assert mermaid.splitlines()[0] == "flowchart LR"
    assert 'n0["ducklake://lake/main.mart"]' in mermaid
    assert "-->|bbbbbbb|" in mermaid
    dot = render(graph, "dot")
    assert dot.startswith("digraph lineage {")
    assert dot.rstrip().endswith("}")
    assert dot.count("->") == 3
    document = json.loads(render(graph, "json"))
    assert len(document["nodes"]) == 4
    with pytest.raises(ValueError, match="known formats"):
        render(graph, "svg")  # type: ignore[arg-type]


def test_names_resolve_from_a_uri_or_a_bare_name(history):
    assert resolve(history, "s3://raw/budget/revenue.csv") == ("s3://raw", "budget/revenue.csv")
    assert resolve(history, "main.mart") == ("ducklake://lake", "main.mart")
    assert resolve(history, "ducklake://lake", "main.mart") == ("ducklake://lake", "main.mart")
    from pudato.errors import NotFound

    with pytest.raises(NotFound, match="no dataset named"):
        resolve(history, "main.nope")


def test_the_cli(history):
    from pudato.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["lineage", "main.mart", "--format", "mermaid", "--depth", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("-->") == 1
    result = runner.invoke(app, ["lineage", "main.mart", "--as-of", "job-1"])
    assert "budget/revenue.csv @ v1" in result.output
    result = runner.invoke(app, ["lineage", "main.mart", "--format", "svg"])
    assert result.exit_code != 0
    assert "known formats" in result.output
