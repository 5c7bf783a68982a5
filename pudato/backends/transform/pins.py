"""Exact reruns of dbt: sources (and upstream models this run does not build) read at recorded snapshots.

A rerun's transform step carries its lake inputs as pins (``Command.pinned_inputs``:
``main.regions`` at snapshot 41). dbt cannot be told "read this source at snapshot
41", but it can read a source from another database. So the lake is attached a
second time, read-only, as it was at each pinned snapshot (the backend's
:meth:`~pudato.backends.warehouse.WarehouseBackend.dbt_attachment_at`), and for
this invocation only the pinned sources and models in the parsed manifest name
that database. Models still build in the writable lake, and nothing in the
analysts' project changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pudato.backends.warehouse import WarehouseBackend, parse_table_name
from pudato.protocol import Command


def table_pins(command: Command, warehouse: WarehouseBackend) -> dict[str, int]:
    """``schema.table`` → the snapshot this step must read it at, for the warehouse's own tables."""
    return {
        pin.name: int(pin.version)
        for pin in command.pinned_inputs
        if pin.namespace == warehouse.namespace and pin.version is not None and pin.version.isdigit()
    }


def check(warehouse: WarehouseBackend, pins: dict[str, int]) -> None:
    """SnapshotGone, naming the table and the snapshot, for the first pin that can no longer be read."""
    if not pins:
        return
    with warehouse.session(read_only=True) as session:
        for name, snapshot in sorted(pins.items()):
            session.version(parse_table_name(name), snapshot)


def attachments(warehouse: WarehouseBackend, pins: dict[str, int]) -> dict[int, dict[str, Any]]:
    """Snapshot → the dbt-duckdb ``attach`` entry that reads the lake as it was then."""
    return {snapshot: warehouse.dbt_attachment_at(snapshot) for snapshot in sorted(set(pins.values()))}


def with_attachments(target: dict[str, Any], attached: dict[int, dict[str, Any]]) -> dict[str, Any]:
    if not attached:
        return target
    return {**target, "attach": [*(target.get("attach") or []), *attached.values()]}


@contextmanager
def pinned_manifest(manifest: Any, pins: dict[str, int], attached: dict[int, dict[str, Any]]) -> Iterator[Any]:
    """The parsed manifest with pinned relations moved to their snapshot's database, put back on exit.

    Changed in place (the caller holds dbt's process-wide lock): the manifest is the
    per-commit cache's, and copying it breaks dbt's lookups.
    """
    changed: list[tuple[Any, str | None, str | None]] = []
    try:
        for node in [*manifest.sources.values(), *manifest.nodes.values()]:
            snapshot = pins.get(_relation(node) or "")
            if snapshot is None:
                continue
            changed.append((node, node.database, getattr(node, "relation_name", None)))
            alias = attached[snapshot]["alias"]
            node.database = alias
            if getattr(node, "relation_name", None):
                node.relation_name = f'"{alias}"."{node.schema}"."{_identifier(node)}"'
        yield manifest
    finally:
        for node, database, relation_name in changed:
            node.database = database
            if relation_name is not None:
                node.relation_name = relation_name


def _identifier(node: Any) -> str:
    if getattr(node, "resource_type", None) == "source" or str(getattr(node, "unique_id", "")).startswith("source."):
        return str(getattr(node, "identifier", None) or node.name)
    return str(getattr(node, "alias", None) or node.name)


def _relation(node: Any) -> str | None:
    schema = getattr(node, "schema", None)
    return f"{schema}.{_identifier(node)}" if schema else None
