"""The registry keeps a drift row per load of a release, refused ones too; the CLI and jobs show print them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pudato.cli import app
from pudato.protocol import DataReference, utcnow
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry, StepUpdate
from pudato.report import format_job

TABLE = DataReference(namespace="duckdb://warehouse", name="main.spend", facets={"rows": 40})
SOURCE = DataReference(namespace="s3://pudato", name="raw/q3.csv")
DRIFT = {
    "against": "table", "drifted": True, "added": ["client"], "removed": [], "retyped": [], "warnings": [],
    "renamed": [{"from": "Organisatonal Unit", "to": "organisational_unit", "by": "position+similarity"}],
    "refused": [], "rows": {"before": 20, "release": 20, "after": 40},
}


def _finish(registry: Registry, step_id: str, **fields) -> None:
    registry.apply(StepUpdate(
        job_id="job-1", step_id=step_id, handler="table", action="load", event="finished", at=utcnow(), **fields,
    ))


def test_drift_is_recorded_for_succeeded_and_refused_loads(tmp_path: Path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    registry = Registry(url)
    validation = {"rows": 20, "rejected": 2, "counts": {"type": 2}, "rejected_table": "main.spend__rejected"}
    _finish(registry, "s1", status="succeeded", inputs=[SOURCE], outputs=[TABLE],
            data={"drift": DRIFT, "validation": validation})
    refused = {**DRIFT, "refused": ["column 'client' added"]}
    _finish(registry, "s2", status="failed", error={
        "type": "DriftRefused", "message": "drifted", "kind": "terminal",
        "details": {"drift": refused, "namespace": TABLE.namespace, "name": TABLE.name, "source": SOURCE.uri},
    })
    monkeypatch.setenv("PUDATO_REGISTRY__URL", url)
    shown = CliRunner().invoke(app, ["datasets", "drift", "main.spend"])
    assert shown.exit_code == 0, shown.output
    assert "renamed: Organisatonal Unit -> organisational_unit (by position+similarity)" in shown.output
    assert "refused by policy: column 'client' added" in shown.output
    assert "rejected 2" in shown.output
    text = format_job(registry.job("job-1"))
    assert "drift: added: client" in text
    assert "rejected: 2 of 20 rows {'type': 2}, kept in main.spend__rejected" in text
