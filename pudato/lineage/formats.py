"""A traced lineage graph as text a person reads: an indented list, JSON, Mermaid or Graphviz DOT.

Nodes are labelled by their URI (``s3://bucket/key``, ``ducklake://lake/main.t``)
and, when the trace was as of a job or version, the version that was read or
written (``@ v3``, ``@ snapshot 12``); links by the logic version (short SHA) that made them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pudato.lineage.graph import Direction, Key, LineageGraph

Format = Literal["text", "json", "mermaid", "dot"]


def render(graph: LineageGraph, fmt: Format) -> str:
    try:
        renderer: Callable[[LineageGraph], str] = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(sorted(_RENDERERS))}") from None
    return renderer(graph)


def uri(namespace: str, name: str) -> str:
    return f"file://{name}" if namespace == "file" else f"{namespace}/{name}"


def indented(edges: list[dict[str, Any]], direction: Direction) -> str:
    lines = []
    for edge in edges:
        source = uri(edge["source_namespace"], edge["source_name"]) + _at(edge.get("source_version"))
        target = uri(edge["target_namespace"], edge["target_name"]) + _at(edge.get("target_version"))
        version = f"  by {edge['logic_version'][:12]}" if edge.get("logic_version") else ""
        arrow = f"{source} → {target}" if direction == "downstream" else f"{target} ← {source}"
        lines.append(f"{'  ' * (edge['depth'] - 1)}{arrow}{version}")
    return "\n".join(lines)


def format_trace(edges: list[dict[str, Any]], direction: Direction) -> str:
    """The indented list the demo prints."""
    return indented(edges, direction)


def _text(graph: LineageGraph) -> str:
    root = uri(*graph.root)
    header = f"{root} ({graph.direction}" + (f", as of {graph.as_of})" if graph.as_of else ")")
    if not graph.edges:
        node = graph.nodes.get(graph.root, {})
        written = f"; last written by job {node['last_job_id']}" if node.get("last_job_id") else ""
        return f"{header}\n  no {graph.direction} datasets recorded{written}"
    return header + "\n" + indented(graph.edges, graph.direction)


def _json(graph: LineageGraph) -> str:
    document = {
        "root": {"namespace": graph.root[0], "name": graph.root[1]},
        "direction": graph.direction,
        "as_of": graph.as_of,
        "nodes": list(graph.nodes.values()),
        "edges": graph.edges,
    }
    return json.dumps(document, indent=2, default=str)


def _mermaid(graph: LineageGraph) -> str:
    ids = _ids(graph)
    lines = ["flowchart LR"]
    for key, node in graph.nodes.items():
        label = uri(*key) + _at(node.get("version"))
        lines.append(f'    {ids[key]}["{_escape(label)}"]')
    for edge in _unique(graph.edges):
        version = f"|{edge['logic_version'][:7]}|" if edge.get("logic_version") else ""
        lines.append(f"    {ids[_key(edge, 'source')]} -->{version} {ids[_key(edge, 'target')]}")
    lines.append(f"    style {ids[graph.root]} stroke-width:3px")
    return "\n".join(lines)


def _dot(graph: LineageGraph) -> str:
    ids = _ids(graph)
    lines = ["digraph lineage {", "    rankdir=LR;", "    node [shape=box];"]
    for key, node in graph.nodes.items():
        label = uri(*key) + _at(node.get("version"))
        bold = ", penwidth=3" if key == graph.root else ""
        lines.append(f'    {ids[key]} [label="{_escape(label)}"{bold}];')
    for edge in _unique(graph.edges):
        label = f' [label="{edge["logic_version"][:7]}"]' if edge.get("logic_version") else ""
        lines.append(f"    {ids[_key(edge, 'source')]} -> {ids[_key(edge, 'target')]}{label};")
    lines.append("}")
    return "\n".join(lines)


_RENDERERS: dict[str, Callable[[LineageGraph], str]] = {
    "text": _text, "json": _json, "mermaid": _mermaid, "dot": _dot,
}


def _ids(graph: LineageGraph) -> dict[Key, str]:
    return {key: f"n{index}" for index, key in enumerate(graph.nodes)}


def _key(edge: dict[str, Any], side: str) -> Key:
    return edge[f"{side}_namespace"], edge[f"{side}_name"]


def _unique(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: dict[tuple[Key, Key], dict[str, Any]] = {}
    for edge in edges:
        found.setdefault((_key(edge, "source"), _key(edge, "target")), edge)
    return list(found.values())


def _at(version: Any) -> str:
    return f" @ {str(version)[:12]}" if version is not None else ""


def _escape(text: str) -> str:
    return text.replace('"', "'")
