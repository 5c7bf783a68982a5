"""Trace a dataset's lineage through the registry, in either direction, today or as of a job.

Today's graph is one recursive SQL query over ``lineage_links`` (one row per
dataset pair, see :class:`pudato.registry.models.LineageLink`), so a trace costs
the size of the graph it returns, not the length of the history behind it. Why
recursive SQL rather than a closure table: a closure table stores every
(ancestor, descendant) pair, which is quadratic on long chains and must be
rewritten when a link appears in the middle of a chain; a recursive query
over indexed links reads only what the trace returns, on PostgreSQL and SQLite alike.

A trace **as of** a job or a logic version walks the recorded steps instead: the
step of that job (or the latest at that version) that wrote the dataset, the
versions it read, and for each of them the step that wrote that version, and so
on. That answers "which release of the raw file fed this mart".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sqlalchemy import select, text

from pudato.registry.database import session_scope
from pudato.registry.models import Dataset, Job, Step, StepDataset
from pudato.registry.repository import Registry

Direction = Literal["upstream", "downstream"]
Key = tuple[str, str]

_WALK = """
WITH RECURSIVE walk(namespace, name, depth) AS (
    SELECT CAST(:namespace AS VARCHAR(255)), CAST(:name AS VARCHAR(1024)), 0
    UNION
    SELECT l.{far}_namespace, l.{far}_name, w.depth + 1
    FROM lineage_links l JOIN walk w ON l.{near}_namespace = w.namespace AND l.{near}_name = w.name
    WHERE w.depth < :max_depth
), reached AS (
    SELECT namespace, name, min(depth) AS depth FROM walk WHERE depth < :max_depth GROUP BY namespace, name
)
SELECT l.id, l.source_namespace, l.source_name, l.target_namespace, l.target_name, l.step_id, l.job_id,
       l.logic_version, l.runs, l.last_seen_at, r.depth + 1 AS depth
FROM lineage_links l JOIN reached r ON l.{near}_namespace = r.namespace AND l.{near}_name = r.name
ORDER BY depth, l.id
"""


@dataclass
class LineageGraph:
    """A traced graph: the dataset asked about, every dataset reached, and the links between them."""

    root: Key
    direction: Direction
    edges: list[dict[str, Any]]
    nodes: dict[Key, dict[str, Any]] = field(default_factory=dict)
    as_of: str | None = None


def trace(
    registry: Registry, namespace: str, name: str, direction: Direction, max_depth: int = 20
) -> list[dict[str, Any]]:
    """Every link reachable from the dataset within ``max_depth`` hops, nearest first."""
    near, far = ("target", "source") if direction == "upstream" else ("source", "target")
    query = text(_WALK.format(near=near, far=far))
    with session_scope(registry.url) as session:
        rows = session.execute(query, {"namespace": namespace, "name": name, "max_depth": max_depth})
        return [dict(row._mapping) for row in rows]


def lineage_graph(
    registry: Registry, namespace: str, name: str, direction: Direction, max_depth: int = 20,
    as_of: str | None = None,
) -> LineageGraph:
    """The graph around a dataset, with what the registry knows of each node (even one with no links)."""
    if as_of is not None:
        edges = trace_as_of(registry, namespace, name, as_of, max_depth)
        direction = "upstream"
    else:
        edges = trace(registry, namespace, name, direction, max_depth)
    graph = LineageGraph(root=(namespace, name), direction=direction, edges=edges, as_of=as_of)
    keys = [(namespace, name)] + [k for e in edges for k in (_source(e), _target(e))]
    with session_scope(registry.url) as session:
        for key in dict.fromkeys(keys):
            row = session.execute(
                select(Dataset).where(Dataset.namespace == key[0], Dataset.name == key[1])
            ).scalar_one_or_none()
            graph.nodes[key] = {"namespace": key[0], "name": key[1],
                                "last_job_id": row.last_job_id if row else None,
                                "last_step_id": row.last_step_id if row else None}  # fmt: skip
    for edge in edges:
        for key, side in ((_source(edge), "source"), (_target(edge), "target")):
            if edge.get(f"{side}_version") is not None:
                graph.nodes[key].setdefault("version", edge[f"{side}_version"])
    return graph


def trace_as_of(registry: Registry, namespace: str, name: str, as_of: str, max_depth: int = 20) -> list[dict[str, Any]]:
    """Upstream through the versions actually read, from the dataset as ``as_of`` (a job id or logic SHA) wrote it."""
    with session_scope(registry.url) as session:
        writer = _writer_at(session, namespace, name, as_of)
        if writer is None:
            return []
        edges: list[dict[str, Any]] = []
        frontier: list[tuple[Key, Step, int]] = [((namespace, name), writer, 0)]
        seen: set[tuple[Key, str]] = set()
        while frontier:
            key, step, depth = frontier.pop(0)
            if depth >= max_depth or (key, step.id) in seen:
                continue
            seen.add((key, step.id))
            outputs = _refs(session, step.id, "output")
            output = outputs.get(key, {})
            derived = output.get("derived_from")
            parents = [(p["namespace"], p["name"]) for p in derived] if derived is not None else list(
                _refs(session, step.id, "input"))
            inputs = _refs(session, step.id, "input")
            for parent in parents:
                facets = outputs.get(parent) or inputs.get(parent) or {}
                parent_writer = step if parent in outputs else _writer_before(session, parent, step, facets)
                edges.append({
                    "source_namespace": parent[0], "source_name": parent[1], "source_version": _version(facets),
                    "target_namespace": key[0], "target_name": key[1], "target_version": _version(output),
                    "step_id": step.id, "job_id": step.job_id, "logic_version": step.logic_version,
                    "depth": depth + 1, "id": len(edges),
                })  # fmt: skip
                if parent_writer is not None:
                    frontier.append((parent, parent_writer, depth + 1))
        return edges


def _writer_at(session: Any, namespace: str, name: str, as_of: str) -> Step | None:
    """The step that wrote the dataset in job ``as_of``, else the latest at logic version ``as_of`` (a SHA prefix)."""
    base = (
        select(Step).join(StepDataset, StepDataset.step_id == Step.id)
        .where(StepDataset.direction == "output", StepDataset.namespace == namespace, StepDataset.name == name,
               Step.status == "succeeded")
        .order_by(Step.finished_at.desc()).limit(1)
    )
    found = session.execute(base.where(Step.job_id == as_of)).scalar_one_or_none()
    if found is None and len(as_of) >= 7:
        found = session.execute(base.join(Job, Job.id == Step.job_id).where(
            (Step.logic_version.startswith(as_of)) | (Job.logic_version.startswith(as_of)))).scalar_one_or_none()
    return cast("Step | None", found)


def _writer_before(session: Any, key: Key, reader: Step, read: dict[str, Any]) -> Step | None:
    """The step that wrote the version ``reader`` read: its recorded version if one matches, else the latest before."""
    candidates = session.execute(
        select(Step, StepDataset.facets).join(StepDataset, StepDataset.step_id == Step.id)
        .where(StepDataset.direction == "output", StepDataset.namespace == key[0], StepDataset.name == key[1],
               Step.status == "succeeded", Step.finished_at <= (reader.started_at or reader.finished_at))
        .order_by(Step.finished_at.desc()).limit(50)
    ).all()
    wanted = _version(read)
    for step, facets in candidates:
        if wanted is not None and _version(facets or {}) == wanted:
            return cast(Step, step)
    return candidates[0][0] if candidates else None


def _refs(session: Any, step_id: str, direction: str) -> dict[Key, dict[str, Any]]:
    rows = session.execute(select(StepDataset).where(StepDataset.step_id == step_id,
                                                     StepDataset.direction == direction).order_by(StepDataset.id))
    return {(r.namespace, r.name): r.facets or {} for r in rows.scalars()}


def _version(facets: dict[str, Any]) -> str | None:
    for name in ("version", "snapshot_id", "sha256"):
        if facets.get(name) is not None:
            return str(facets[name])
    return None


def _source(edge: dict[str, Any]) -> Key:
    return edge["source_namespace"], edge["source_name"]


def _target(edge: dict[str, Any]) -> Key:
    return edge["target_namespace"], edge["target_name"]



def resolve(registry: Registry, dataset: str, name: str | None = None) -> Key:
    """A dataset as people type it: ``NAMESPACE NAME``, a URI (``s3://bucket/key``), or a bare name
    (``main.fct_gf_revenue``) that one namespace holds. An unknown or ambiguous bare name is an error."""
    from pudato.datasets import split_uri
    from pudato.errors import InvalidCommand, NotFound

    if name is not None:
        return dataset, name
    namespace, bare = split_uri(dataset)
    if namespace is not None:
        return namespace, bare
    query = text(
        "SELECT DISTINCT namespace FROM (SELECT source_namespace AS namespace FROM lineage_links WHERE source_name = :n"
        " UNION SELECT target_namespace FROM lineage_links WHERE target_name = :n"
        " UNION SELECT namespace FROM datasets WHERE name = :n) found ORDER BY namespace"
    )
    with session_scope(registry.url) as session:
        namespaces = [row[0] for row in session.execute(query, {"n": bare})]
    if not namespaces:
        raise NotFound(f"no dataset named {bare!r} in the registry; give its URI, e.g. s3://bucket/key", name=bare)
    if len(namespaces) > 1:
        raise InvalidCommand(f"{bare!r} is in several namespaces ({', '.join(namespaces)}): give its URI", name=bare)
    return namespaces[0], bare
