"""SNS PublishBatch calls hold at most 10 entries and 256 KiB in all. One splitter serves the
Results fan-out (:mod:`pudato.fanout`) and Celery's event broadcast (``workers.transport``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

BATCH_ENTRIES = 10
BATCH_BYTES = 240 * 1024  # of SNS's 256 KiB, leaving room for the request's own envelope


def string_attributes(values: dict[str, str]) -> dict[str, dict[str, str]]:
    """SNS message attributes from plain strings; empty ones are left out (SNS refuses them)."""
    return {key: {"DataType": "String", "StringValue": value} for key, value in values.items() if value}


def batches(messages: Iterable[tuple[str, dict[str, Any] | None]]) -> list[list[dict[str, Any]]]:
    """PublishBatch entries for (body, SNS message attributes) pairs, split so that each call fits."""
    found: list[list[dict[str, Any]]] = []
    size = 0
    for body, attributes in messages:
        entry: dict[str, Any] = {"Message": body}
        if attributes:
            entry["MessageAttributes"] = attributes
        weight = len(body.encode()) + (len(json.dumps(attributes)) if attributes else 0)
        if not found or len(found[-1]) == BATCH_ENTRIES or size + weight > BATCH_BYTES:
            found.append([])
            size = 0
        entry["Id"] = str(len(found[-1]))
        found[-1].append(entry)
        size += weight
    return found
