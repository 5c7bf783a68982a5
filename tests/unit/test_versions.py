"""Dataset history and "as of" on a SQLite registry."""

from __future__ import annotations

import pytest

from pudato import datasets, versions
from pudato.errors import InvalidCommand, NotFound
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry, StepPlan, StepUpdate


@pytest.fixture
def registry(tmp_path) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return Registry(url)


def _load(registry: Registry, job_id: str, snapshot: int, rows: int, status: str = "succeeded") -> None:
    raw = datasets.s3_object("bucket", "raw/a.csv", version=f"v{snapshot}", sha256="abc")
    table = datasets.lake_table("lake", "main.a", snapshot_id=snapshot, rows=rows, schema_fingerprint="f")
    registry.create_job(job_id, [StepPlan(step_id=f"{job_id}-load", handler="table", action="load", name="load")],
                        logic_version="a" * 40)
    registry.apply(StepUpdate(event="started", step_id=f"{job_id}-load", job_id=job_id, handler="table",
                              action="load"))
    registry.apply(
        StepUpdate(
            event="finished",
            step_id=f"{job_id}-load",
            job_id=job_id,
            handler="table",
            action="load",
            status=status,
            inputs=[raw],
            outputs=[table] if status == "succeeded" else [],
        )
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://bucket/raw/a.csv", ("s3://bucket", "raw/a.csv")),
        ("ducklake://pudato_lake/main.t", ("ducklake://pudato_lake", "main.t")),
        ("file:///tmp/a.csv", ("file", "/tmp/a.csv")),
        ("main.t", (None, "main.t")),
    ],
)
def test_split_uri_inverts_the_reference_uri(text, expected):
    assert datasets.split_uri(text) == expected


def test_history_lists_each_written_version_with_its_job_step_and_sha(registry):
    _load(registry, "job-1", 4, 2)
    _load(registry, "job-2", 9, 5)
    _load(registry, "job-3", 12, 7, status="failed")
    rows = versions.history(registry, "ducklake://lake/main.a")
    assert [(r["job_id"], r["step_id"], r["version"], r["rows"]) for r in rows] == [
        ("job-1", "job-1-load", "4", 2),
        ("job-2", "job-2-load", "9", 5),
    ]
    assert {r["logic_version"] for r in rows} == {"a" * 40}
    assert versions.history(registry, "main.a") == rows
    assert versions.history(registry, "duckdb://other/main.a") == []
    assert "written by job job-2 step load (table.load)" in versions.format_history(rows)


def test_as_of_takes_a_snapshot_a_job_or_a_step(registry):
    _load(registry, "job-1", 4, 2)
    assert versions.snapshot_as_of(registry, "17") == 17
    assert versions.snapshot_as_of(registry, "job-1") == 4
    assert versions.snapshot_as_of(registry, "job-1-load") == 4
    with pytest.raises(NotFound, match="neither a snapshot id nor a job or step"):
        versions.snapshot_as_of(registry, "nothing-like-this")


def test_as_of_a_job_that_touched_no_lake_table_says_so(registry):
    registry.create_job("job-s3", [StepPlan(step_id="s", handler="storage", action="put")])
    with pytest.raises(InvalidCommand, match="recorded no lake table"):
        versions.snapshot_as_of(registry, "job-s3")
