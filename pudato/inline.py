"""Inline content in payloads: how much a message may carry, and how the registry keeps it.

A step's payload travels in one SQS message, which holds at most 256 KiB; Celery's
envelope and the transport's base64 make a payload grow by about a third on the
way. So a payload over :data:`MAX_PAYLOAD_BYTES` (as JSON) is refused when the job
is submitted, before anything is recorded or sent, with the fix: put the data in
storage and pass its key. The registry keeps inline content over
:data:`RECORDED_INLINE_BYTES` as its sha256 and size, not as bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pudato.errors import InvalidCommand

MAX_PAYLOAD_BYTES = 128 * 1024
RECORDED_INLINE_BYTES = 4 * 1024
INLINE_FIELDS = ("content", "content_base64", "rows")
ELIDED = "inline_content_elided"


def payload_bytes(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, default=str, separators=(",", ":")).encode("utf-8"))


def check_payload_size(label: str, payload: dict[str, Any]) -> None:
    """Refuse a payload too large for one queue message, naming the step and the fix."""
    size = payload_bytes(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidCommand(
            f"step {label}: its payload is {size:,} bytes as JSON, over the {MAX_PAYLOAD_BYTES:,} bytes a queue "
            "message can carry; put the data in storage first (storage put with source: a file below an import "
            "root) and pass its key instead of inline content",
            step=label,
            payload_bytes=size,
            limit=MAX_PAYLOAD_BYTES,
        )


def recorded_payload(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """The payload as the registry keeps it: large inline content replaced by its sha256 and size."""
    if not payload:
        return payload
    kept = dict(payload)
    elided: dict[str, Any] = {}
    for field in INLINE_FIELDS:
        value = kept.get(field)
        if value is None or isinstance(value, (int, float, bool)):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
        data = text.encode("utf-8")
        if len(data) > RECORDED_INLINE_BYTES:
            elided[field] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            del kept[field]
    if elided:
        kept[ELIDED] = elided
    return kept


def recorded_canvas(node: Any) -> Any:
    """A described canvas with every step's payload as the registry keeps it."""
    if isinstance(node, dict):
        return {k: (recorded_payload(v) if k == "payload" and isinstance(v, dict) else recorded_canvas(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [recorded_canvas(v) for v in node]
    return node
