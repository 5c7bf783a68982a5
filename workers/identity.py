"""Which job and step a task message belongs to, read from the message alone, and whether to trust it.

A command that names a job or a step must carry the platform's signature over
them (:mod:`pudato.signing`); one that does not is *refused*: its handler is
not run and nothing is recorded under the ids it claims, only a row in
``rejected_messages``. A command with no ids (a plain ``.delay()``) is a job of
its own, named by its task id; the ``pudato_job_id`` header, which any producer
can set, never decides which job a step joins.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from pudato.protocol import ID_PATTERN, MAX_STEP_NAME
from pudato.settings import get_settings
from pudato.signing import platform_key, verify

_ID = re.compile(ID_PATTERN)
_CACHE = "_pudato_identity"


def identify(request: Any, kwargs: dict[str, Any] | None) -> dict[str, str]:
    """``job_id``, ``step_id``, ``action``, ``name`` and ``refused`` (a reason, or empty) of a task message."""
    cached = getattr(request, _CACHE, None)
    if cached is not None:
        return dict(cached)
    raw = (kwargs or {}).get("command")
    raw = raw if isinstance(raw, dict) else {}
    own = str(request.id)
    ids = {"job_id": own, "step_id": own, "action": _text(raw.get("action"), 64) or "unknown",
           "name": _text(raw.get("step_name"), MAX_STEP_NAME), "refused": ""}
    if any(raw.get(field) is not None for field in ("job_id", "step_id", "signature")):
        ids["refused"] = _refusal(raw)
        if not ids["refused"]:
            ids["job_id"], ids["step_id"] = str(raw["job_id"]), str(raw["step_id"])
    if not _ID.match(own):
        ids["refused"] = ids["refused"] or f"task id {own[:80]!r} is not a valid step id"
    with contextlib.suppress(AttributeError):  # a request that takes no attributes computes it again
        setattr(request, _CACHE, dict(ids))
    return ids


def _refusal(raw: dict[str, Any]) -> str:
    for field in ("job_id", "step_id"):
        value = raw.get(field)
        if not isinstance(value, str) or not _ID.match(value):
            return f"command {field} {str(value)[:80]!r} is not a valid id (letters, digits, '_.:-', at most 64)"
    if not verify(raw, platform_key(get_settings())):
        return (f"command names job {raw['job_id']} and step {raw['step_id']} without a valid platform signature: "
                "submit steps with pudato.jobs, or send a command without ids to make a job of its own")
    return ""


def _text(value: Any, limit: int) -> str:
    """A field fit for the registry, or empty: the command's own validation names what is wrong."""
    return value if isinstance(value, str) and 0 < len(value) <= limit and "\x00" not in value else ""
