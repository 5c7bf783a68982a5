"""Drift of datasets across releases, as the registry keeps it.

Every finished load that carries a drift report (in its Result's data, or, when
a policy failed it, in its error's details) becomes one ``dataset_drift`` row,
so ``pudato datasets drift NAME`` lists a dataset's releases and how each one
changed it, refused ones included.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pudato.protocol import utcnow
from pudato.registry.database import session_scope
from pudato.registry.models import DatasetDrift, Step


def record_drift(session: Session, step: Step) -> None:
    """Add (or replace, for a rerun of the same step) the step's drift row, if it loaded a release."""
    found = _report(step)
    if found is None:
        return
    namespace, name, source, report, validation = found
    for old in session.scalars(select(DatasetDrift).where(DatasetDrift.step_id == step.id)):
        session.delete(old)
    session.add(
        DatasetDrift(
            step_id=step.id, job_id=step.job_id, namespace=namespace, name=name, source=source,
            status=step.status, drifted=bool(report.get("drifted")), report=report, validation=validation,
            recorded_at=utcnow(),
        )
    )


def _report(step: Step) -> tuple[str, str, str | None, dict[str, Any], dict[str, Any] | None] | None:
    data = step.data or {}
    details = (step.error or {}).get("details") or {}
    if isinstance(data.get("drift"), dict) and step.outputs:
        output = step.outputs[0]
        source = (step.inputs or [{}])[0]
        uri = f"{source.get('namespace')}/{source.get('name')}" if source else None
        return output["namespace"], output["name"], uri, data["drift"], _summary(data.get("validation"))
    if isinstance(details.get("drift"), dict) and details.get("namespace") and details.get("name"):
        summary = _summary(details.get("validation"))
        return details["namespace"], details["name"], details.get("source"), details["drift"], summary
    if isinstance(details.get("validation"), dict) and details.get("namespace") and details.get("name"):
        drift = {"drifted": False, "refused": [], "note": "not compared: the release failed validation"}
        return details["namespace"], details["name"], details.get("source"), drift, _summary(details["validation"])
    return None


def _summary(validation: Any) -> dict[str, Any] | None:
    if not isinstance(validation, dict):
        return None
    keep = ("rows", "accepted", "rejected", "counts", "rejected_table", "short_records", "blank_records_skipped")
    return {k: validation[k] for k in keep if k in validation}


def drift_history(url: str, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every recorded release of a dataset, oldest first. ``name`` may be ``schema.table`` or a full URI."""
    if namespace is None and "://" in name:
        namespace, _, name = name.rpartition("/")
    query = select(DatasetDrift).where(DatasetDrift.name == name).order_by(DatasetDrift.id)
    if namespace is not None:
        query = query.where(DatasetDrift.namespace == namespace)
    with session_scope(url) as session:
        return [
            {
                "namespace": row.namespace, "name": row.name, "job_id": row.job_id, "step_id": row.step_id,
                "source": row.source, "status": row.status, "drifted": row.drifted, "report": row.report,
                "validation": row.validation, "recorded_at": row.recorded_at,
            }
            for row in session.scalars(query)
        ]


def format_drift(rows: list[dict[str, Any]]) -> str:
    """Each release on a line, then what changed."""
    lines: list[str] = []
    for row in rows:
        report, validation = row["report"], row.get("validation") or {}
        rows_ = report.get("rows") or {}
        lines.append(
            f"{row['recorded_at']}  {row['status']:<9} job {row['job_id']}  {row.get('source') or ''}  "
            f"rows {rows_.get('before')} -> {rows_.get('after')} (release {rows_.get('release')})"
            + (f", rejected {validation.get('rejected')}" if validation.get("rejected") else "")
        )
        lines += ["    " + line for line in describe_drift(report)]
    return "\n".join(lines)


def describe_drift(report: dict[str, Any]) -> list[str]:
    """A drift report as short lines for people."""
    lines = []
    if report.get("added"):
        lines.append(f"added: {', '.join(report['added'])}")
    if report.get("removed"):
        lines.append(f"removed: {', '.join(report['removed'])}")
    for rename in report.get("renamed") or []:
        lines.append(f"renamed: {rename['from']} -> {rename['to']} (by {rename['by']})")
    for change in report.get("retyped") or []:
        lines.append(f"retyped: {change['column']} {change['from']} -> {change['to']}")
    if report.get("refused"):
        lines.append(f"refused by policy: {'; '.join(report['refused'])}")
    return lines
