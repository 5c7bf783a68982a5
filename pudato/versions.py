"""Dataset versions a person can see: a dataset's history, and "as of" a job, a step or a snapshot.

Every step records the datasets it wrote with the version it made: an S3 object's
``version`` (its version id) and ``sha256``, a lake table's ``snapshot_id``,
``rows`` and ``schema_fingerprint``. :func:`history` lists them for one dataset
with the job, step and logic SHA that wrote each; :func:`snapshot_as_of` turns a
job id, a step id or a snapshot id into the lake snapshot to read tables at.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pudato.datasets import split_uri
from pudato.errors import InvalidCommand, NotFound
from pudato.registry.repository import Registry

# Where a reference keeps its version, in the order tried: lake tables, then S3 objects and local files.
VERSION_FACETS = ("snapshot_id", "version")
SNAPSHOT_FACET = "snapshot_id"
_SHOWN_FACETS = ("rows", "sha256", "size", "schema_fingerprint")
_SNAPSHOT_ID = re.compile(r"^[0-9]{1,18}$")


def version_of(facets: dict[str, Any] | None) -> str | None:
    facets = facets or {}
    found = next((facets[k] for k in VERSION_FACETS if facets.get(k) is not None), None)
    return None if found is None else str(found)


def history(registry: Registry, dataset: str) -> list[dict[str, Any]]:
    """Every version of ``dataset`` (a URI such as ``s3://bucket/key``, or a bare name), oldest first."""
    namespace, name = split_uri(dataset)
    rows = []
    for row in registry.dataset_history(name, namespace):
        facets = row.pop("facets")
        rows.append({**row, "version": version_of(facets),
                     **{k: facets[k] for k in _SHOWN_FACETS if facets.get(k) is not None}})
    return rows


def format_history(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        written = row["written_at"].isoformat(timespec="seconds") if isinstance(row["written_at"], datetime) else ""
        facts = "  ".join(f"{k} {row[k]}" for k in ("rows", "sha256") if row.get(k) is not None)
        sha = (row.get("logic_version") or "-")[:12]
        lines.append(f"{written}  version {row['version'] or '-'}  {facts}".rstrip())
        lines.append(f"    {row['namespace']}/{row['name']}  written by job {row['job_id']} "
                     f"step {row.get('step_name') or row['step_id']} ({row['handler']}.{row['action']}) at {sha}")
    return "\n".join(lines)


def snapshot_as_of(registry: Registry, as_of: str) -> int:
    """The lake snapshot a reader "as of" ``as_of`` sees: a snapshot id as given; for a job or a step,
    the newest snapshot any of its table inputs or outputs was recorded at (tables as they were when it ran)."""
    text = str(as_of).strip()
    if _SNAPSHOT_ID.match(text):
        return int(text)
    try:
        job = registry.job(text)
        steps = job["steps"]
    except NotFound:
        steps = _step(registry, text)
    snapshots = [
        int(ref["facets"][SNAPSHOT_FACET])
        for step in steps
        for ref in (step.get("inputs") or []) + (step.get("outputs") or [])
        if (ref.get("facets") or {}).get(SNAPSHOT_FACET) is not None
    ]
    if not snapshots:
        raise InvalidCommand(
            f"as_of {text!r}: the job or step recorded no lake table at a snapshot, so there is nothing to read "
            "tables as of; give a snapshot id, or a job or step that read or wrote lake tables",
            as_of=text,
        )
    return max(snapshots)


def _step(registry: Registry, step_id: str) -> list[dict[str, Any]]:
    step = registry.step(step_id)
    if step is None:
        raise NotFound(f"as_of {step_id!r} is neither a snapshot id nor a job or step in the registry",
                       as_of=step_id)
    return [step]
