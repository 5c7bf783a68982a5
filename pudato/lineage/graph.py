"""Trace a dataset's lineage through the registry, in either direction.

Walks ``lineage_edges`` breadth first, so ``file → raw table → staging model →
mart`` can be followed from the file down or from the mart up. Each edge says
which step and job made it, and with which logic version.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

from pudato.registry.repository import Registry

Direction = Literal["upstream", "downstream"]


def trace(
    registry: Registry, namespace: str, name: str, direction: Direction, max_depth: int = 20
) -> list[dict[str, Any]]:
    """Every edge reachable from the dataset, nearest first; the latest edge per dataset pair."""
    seen: set[tuple[str, str]] = {(namespace, name)}
    frontier = deque([(namespace, name, 0)])
    found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    while frontier:
        current_ns, current_name, depth = frontier.popleft()
        if depth >= max_depth:
            continue
        for edge in registry.edges(current_ns, current_name, direction):
            key = (edge["source_namespace"], edge["source_name"], edge["target_namespace"], edge["target_name"])
            found[key] = {**edge, "depth": depth + 1}
            nxt = key[:2] if direction == "upstream" else key[2:]
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((*nxt, depth + 1))
    return sorted(found.values(), key=lambda e: (e["depth"], e["id"]))


def format_trace(edges: list[dict[str, Any]], direction: Direction) -> str:
    lines = []
    for edge in edges:
        source = _uri(edge["source_namespace"], edge["source_name"])
        target = _uri(edge["target_namespace"], edge["target_name"])
        version = f"  @ {edge['logic_version'][:12]}" if edge.get("logic_version") else ""
        arrow = f"{source} → {target}" if direction == "downstream" else f"{target} ← {source}"
        lines.append(f"{'  ' * (edge['depth'] - 1)}{arrow}{version}")
    return "\n".join(lines)


def _uri(namespace: str, name: str) -> str:
    return f"file://{name}" if namespace == "file" else f"{namespace}/{name}"
