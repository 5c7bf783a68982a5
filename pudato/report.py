"""Show a job and its steps: as text for people, as JSON for programs."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def job_document(job: dict[str, Any]) -> dict[str, Any]:
    """A job with its steps, JSON-ready."""
    document: dict[str, Any] = json.loads(json.dumps(job, default=_default))
    return document


def format_job(job: dict[str, Any]) -> str:
    lines = [f"job {job['id']}  {job.get('name') or ''}  status: {job['status']}"]
    if job.get("logic_version"):
        lines.append(f"  logic version {job['logic_version']}")
    for step in job["steps"]:
        duration = f"{step['duration_ms']:.0f} ms" if step.get("duration_ms") is not None else "-"
        label = step.get("name") or f"{step['handler']}.{step['action']}"
        lines.append(f"  [{step['status']:>9}] {label:<24} {step['handler']}.{step['action']:<8} {duration:>9}")
        inputs = ", ".join(_uri(ref) for ref in step.get("inputs") or []) or "-"
        outputs = ", ".join(_uri(ref) for ref in step.get("outputs") or []) or "-"
        lines.append(f"              {inputs} → {outputs}")
        if step.get("error"):
            lines.append(f"              error: {step['error']['type']}: {step['error']['message']}")
        lines += [f"              {line}" for line in _release_lines(step)]
    return "\n".join(lines)


def _release_lines(step: dict[str, Any]) -> list[str]:
    """A load's drift and validation, in brief: what changed, what was rejected and where it was kept."""
    from pudato.registry.drift import describe_drift

    data = step.get("data") or {}
    details = (step.get("error") or {}).get("details") or {}
    drift = data.get("drift") or details.get("drift")
    validation = data.get("validation") or details.get("validation")
    lines = [f"drift: {line}" for line in describe_drift(drift)] if isinstance(drift, dict) else []
    rows = drift.get("rows") if isinstance(drift, dict) else None
    if lines and isinstance(rows, dict) and rows.get("before") is not None:
        lines.append(f"drift: rows {rows['before']} -> {rows.get('after')} (release {rows.get('release')})")
    if isinstance(validation, dict) and validation.get("rejected"):
        kept = f", kept in {validation['rejected_table']}" if validation.get("rejected_table") else ""
        counts = validation.get("counts")
        lines.append(f"rejected: {validation['rejected']} of {validation.get('rows')} rows {counts}{kept}")
    return lines


def format_rows(columns: list[Any], rows: list[list[Any]]) -> str:
    names = [c["name"] if isinstance(c, dict) else str(c) for c in columns]
    table = [names] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(names))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _uri(ref: dict[str, Any]) -> str:
    if ref["namespace"] == "file":
        return f"file://{ref['name']}"
    return f"{ref['namespace']}/{ref['name']}"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
