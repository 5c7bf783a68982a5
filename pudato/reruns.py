"""Exact reruns: which inputs a rerun reads at their recorded versions, and whether those still exist.

A recorded step lists its inputs with the versions it read (an S3 version id, a
lake snapshot id, a file's sha256). An exact rerun pins each step's inputs from
*outside* the job to those versions (``Command.pinned_inputs``). A dataset that an
earlier step of the same job wrote is left unpinned: the rerun reads it as the
rerun's own earlier step wrote it, so that a rerun on today's code (``--latest``)
builds on its own results rather than on the old job's.

Before anything is sent, :func:`check` asks the backends whether every pinned
version can still be read; a gone one fails the rerun with
:class:`~pudato.errors.VersionGone`, naming the dataset and the version.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pudato import datasets
from pudato.errors import VersionGone
from pudato.protocol import InputPin
from pudato.settings import Settings
from pudato.versions import version_of


def recorded_pin(ref: dict[str, Any]) -> InputPin | None:
    """The pin for a recorded input reference, or None when nothing about it names a version."""
    facets = ref.get("facets") or {}
    version, sha256 = version_of(facets), facets.get("sha256")
    if version is None and sha256 is None:
        return None
    return InputPin(namespace=ref["namespace"], name=ref["name"], version=version, sha256=sha256)


def predecessors(canvas: dict[str, Any]) -> dict[str, set[str]]:
    """For each step id of a described canvas, the ids of the steps that finish before it starts."""
    found: dict[str, set[str]] = {}

    def walk(node: dict[str, Any], before: set[str]) -> set[str]:
        """Record ``node``'s steps as running after ``before``; return the steps ``node`` holds."""
        if "handler" in node:
            found[node["step_id"]] = set(before)
            return {node["step_id"]}
        if "chord" in node:
            header = set().union(*(walk(part, before) for part in node["chord"]))
            return header | walk(node["body"], before | header)
        if "chain" in node:
            done: set[str] = set()
            for part in node["chain"]:
                done |= walk(part, before | done)
            return done
        return set().union(*(walk(part, before) for part in node.get("group", [])))

    walk(canvas, set())
    return found


def pins_by_step(job: dict[str, Any]) -> dict[str, list[InputPin]]:
    """The inputs each recorded step of ``job`` must read as recorded, keyed by the old step id."""
    steps = {step["id"]: step for step in job.get("steps") or []}
    written: dict[str, set[tuple[str, str]]] = {
        step_id: {(ref["namespace"], ref["name"]) for ref in step.get("outputs") or []}
        for step_id, step in steps.items()
    }
    pins: dict[str, list[InputPin]] = {}
    for step_id, earlier in predecessors(job["canvas"]).items():
        made_here = set().union(*(written.get(other, set()) for other in earlier))
        step = steps.get(step_id) or {}
        chosen = [recorded_pin(ref) for ref in step.get("inputs") or []
                  if (ref["namespace"], ref["name"]) not in made_here]
        pins[step_id] = [pin for pin in chosen if pin is not None]
    return pins


def check(pins: Iterable[InputPin], settings: Settings) -> None:
    """Raise VersionGone for the first pinned version that can no longer be read."""
    from pudato.backends.storage import storage_backend
    from pudato.backends.warehouse import warehouse_backend

    pins = list(pins)
    storage = storage_backend(settings) if any(p.namespace.startswith("s3://") for p in pins) else None
    lake = f"{datasets.LAKE_SCHEME}://"
    warehouse = warehouse_backend(settings) if any(p.namespace.startswith(lake) for p in pins) else None
    for pin in pins:
        if storage is not None and pin.namespace == storage.reference("x").namespace and pin.version is not None:
            storage.head(pin.name, pin.version)
        elif pin.namespace == "file" and pin.sha256 is not None:
            _check_file(pin)
        elif warehouse is not None and pin.namespace == warehouse.namespace and pin.version is not None:
            warehouse.table_version(pin.name, int(pin.version))


def _check_file(pin: InputPin) -> None:
    from pathlib import Path

    from pudato.backends.storage import sha256_of_file

    path = Path(pin.name)
    check_file_unchanged(pin, sha256_of_file(path) if path.is_file() else None)


def check_file_unchanged(pin: InputPin | None, digest: str | None) -> None:
    """A file is read as recorded only if its bytes are the recorded ones: files keep no versions."""
    if pin is None or pin.sha256 is None or pin.sha256 == digest:
        return
    state = f"now {digest}" if digest else "now missing"
    raise VersionGone(
        f"file://{pin.name} has changed since the recorded run (sha256 was {pin.sha256}, {state}); "
        "local files keep no versions, so it cannot be read as recorded. Rerun with --latest-data to "
        "read it as it is now",
        dataset=f"file://{pin.name}", version=pin.sha256,
    )
