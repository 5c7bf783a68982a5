"""Column lineage of a dbt model, from the graph dbt's manifest gives and the columns each table has.

dbt's manifest says which relations a model reads (``derived_from``), and each
recorded table version lists its columns. A model's column derives from the
columns of the same name in its parents. That is what the manifest supports
without parsing SQL: a renamed or computed column has no recorded parents.
Pudato's own version columns (``_pudato_*``) come from dbt vars, not from parents.
"""

from __future__ import annotations

from typing import Any

from pudato.protocol import DataReference

_OWN_COLUMNS = "_pudato_"


def column_lineage(output: dict[str, Any], known: list[DataReference]) -> dict[str, list[tuple[str, str]]]:
    """For each column of ``output``, the (namespace, name) of parents with a column of that name."""
    facets = output.get("facets") or {}
    parents = facets.get("derived_from")
    columns = _names(facets.get("columns"))
    if not parents or not columns:
        return {}
    by_dataset = {(ref.namespace, ref.name): _names(ref.facets.get("columns")) for ref in known}
    found: dict[str, list[tuple[str, str]]] = {}
    for column in columns:
        if column.startswith(_OWN_COLUMNS):
            continue
        sources = [(p["namespace"], p["name"]) for p in parents
                   if column in by_dataset.get((p["namespace"], p["name"]), ())]  # fmt: skip
        if sources:
            found[column] = sources
    return found


def _names(columns: Any) -> tuple[str, ...]:
    if not isinstance(columns, list):
        return ()
    return tuple(str(c["name"]) for c in columns if isinstance(c, dict) and "name" in c)
