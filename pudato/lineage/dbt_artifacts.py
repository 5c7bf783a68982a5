"""dbt's artifacts, read for lineage: ``manifest.json`` → a graph of relations, ``run_results.json`` → records.

The transform backend runs dbt; this module only reads what dbt wrote. A
manifest node becomes a :class:`Node` (its relation, its parents, the seed file
it loads); :func:`upstream` names the datasets a node reads the way the table
handler names them, looking through ephemeral models; :func:`node_record` and
:func:`test_record` keep what the registry stores of one ``run_results`` entry.

Seed files are named in the logic repository (:func:`pudato.datasets.logic_file`),
never by the worker's checkout path, so the same file at the same commit is the
same dataset on every worker, and a new commit is a new version of it, not a new dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pudato import datasets
from pudato.protocol import DataReference

TEXT_MAX = 10_000
MESSAGE_MAX = 2_000
FAILED_STATUSES = {"error", "fail", "runtime error"}
# Statuses of nodes that ran and so read their parents (a failing test still read its model).
RAN_STATUSES = {"success", "pass", "fail", "warn"}
RELATIONAL = {"model", "seed", "snapshot"}


@dataclass(frozen=True)
class Node:
    """What lineage needs of one manifest node or source."""

    resource_type: str
    relation: str | None  # "schema.table", None for tests and ephemeral models
    depends_on: tuple[str, ...]
    attached_node: str | None = None
    seed_file: str | None = None
    columns: tuple[str, ...] = ()  # documented in the project's YAML, in order
    path: str | None = None  # the file in the project that defines it
    test_name: str | None = None  # a generic test's name: not_null, unique, ...
    column: str | None = None  # the column a test checks


@dataclass(frozen=True)
class LogicSource:
    """Where the project came from: the repository URL, the commit, and its checkout on this worker."""

    repo: str
    sha: str
    path: Path


def read_json(path: Path) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found


def graph(manifest: dict[str, Any]) -> dict[str, Node]:
    """Every node and source of a manifest by unique id."""
    nodes: dict[str, Node] = {}
    for uid, node in (manifest.get("nodes") or {}).items():
        kind = node.get("resource_type", uid.split(".", 1)[0])
        materialized = (node.get("config") or {}).get("materialized")
        relational = kind in RELATIONAL and materialized != "ephemeral"
        nodes[uid] = Node(
            resource_type=kind,
            relation=f"{node.get('schema')}.{node.get('alias') or node.get('name')}" if relational else None,
            depends_on=tuple((node.get("depends_on") or {}).get("nodes") or ()),
            attached_node=node.get("attached_node"),
            seed_file=node.get("original_file_path") if kind == "seed" else None,
            columns=tuple(node.get("columns") or ()),
            path=node.get("original_file_path"),
            test_name=(node.get("test_metadata") or {}).get("name") if kind == "test" else None,
            column=node.get("column_name") if kind == "test" else None,
        )
    for uid, source in (manifest.get("sources") or {}).items():
        name = source.get("identifier") or source.get("name")
        nodes[uid] = Node("source", f"{source.get('schema')}.{name}", (), columns=tuple(source.get("columns") or ()))
    return nodes


def upstream(uid: str, nodes: dict[str, Node], namespace: str, logic: LogicSource) -> list[DataReference]:
    """The relations a node reads, looking through ephemeral models (they are inlined SQL).

    A seed reads its CSV file, named in the logic repository at the checkout's commit.
    """
    found: dict[str, DataReference] = {}
    pending, seen = list(nodes[uid].depends_on) if uid in nodes else [], set()
    while pending:
        parent = pending.pop(0)
        if parent in seen or parent not in nodes:
            continue
        seen.add(parent)
        node = nodes[parent]
        if node.relation:
            found[node.relation] = datasets.warehouse_table(namespace, node.relation, unique_id=parent,
                                                            resource_type=node.resource_type)  # fmt: skip
        elif node.resource_type == "model":
            pending.extend(node.depends_on)
    own = nodes.get(uid)
    if own is not None and own.seed_file:
        seed = logic.path / own.seed_file
        facets: dict[str, Any] = {"sha256": hashlib.sha256(seed.read_bytes()).hexdigest()} if seed.is_file() else {}
        found[own.seed_file] = datasets.logic_file(logic.repo, own.seed_file, logic.sha, **facets)
    return list(found.values())


def node_record(item: dict[str, Any], node: Node, parents: list[DataReference]) -> dict[str, Any]:
    """One run_results entry, with its relation and the datasets it read."""
    return {
        "unique_id": item["unique_id"],
        "resource_type": node.resource_type,
        "status": item.get("status"),
        "relation": node.relation,
        "path": node.path,
        "depends_on": [ref.name for ref in parents],
        "rows_affected": (item.get("adapter_response") or {}).get("rows_affected"),
        "execution_time": item.get("execution_time"),
        "message": short(item.get("message")),
        "compiled_code": truncate(item.get("compiled_code")),
    }


def test_record(item: dict[str, Any], node: Node) -> dict[str, Any]:
    """A dbt test's outcome, with the model it is attached to: OpenLineage's data-quality assertion."""
    return {
        "unique_id": item["unique_id"],
        "status": item.get("status"),
        "failures": item.get("failures"),
        "message": short(item.get("message")),
        "attached_node": node.attached_node,
        "test_name": node.test_name,
        "column": node.column,
        "models": [dep for dep in node.depends_on if not dep.startswith("macro.")],
    }


def without_code(ref: DataReference) -> DataReference:
    # Events fan out on SNS; the SQL is already in the Result, once is enough.
    return ref.model_copy(update={"facets": {k: v for k, v in ref.facets.items() if k != "compiled_code"}})


def execute_start(item: dict[str, Any]) -> datetime | None:
    for phase in item.get("timing") or []:
        if phase.get("name") == "execute" and phase.get("started_at"):
            try:
                return datetime.fromisoformat(phase["started_at"])
            except ValueError:
                return None
    return None


def truncate(text: str | None, limit: int = TEXT_MAX) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit] + f"\n-- truncated ({len(text)} characters)"


def short(text: Any, limit: int = MESSAGE_MAX) -> str | None:
    return None if text is None else truncate(str(text), limit)
