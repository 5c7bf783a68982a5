"""Which job and step a task message belongs to, read from the message alone."""

from __future__ import annotations

from typing import Any

from pudato.protocol import JOB_HEADER


def identify(request: Any, kwargs: dict[str, Any] | None) -> dict[str, str]:
    """The job and step a task message belongs to, even when its command is malformed."""
    raw = (kwargs or {}).get("command")
    raw = raw if isinstance(raw, dict) else {}
    headers = getattr(request, "headers", None) or {}
    job_id = raw.get("job_id") or headers.get(JOB_HEADER) or getattr(request, "root_id", None) or request.id
    step_id = raw.get("step_id") or request.id
    return {"job_id": str(job_id), "step_id": str(step_id), "action": str(raw.get("action") or "unknown")}
