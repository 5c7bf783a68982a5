"""Lineage: what each step read and wrote, read back as a graph and sent out as OpenLineage.

============================  ================================================
module                        what it does
============================  ================================================
:mod:`.graph`                 trace a dataset up or down through the registry
:mod:`.formats`               a traced graph as text, JSON, Mermaid or DOT
:mod:`.dbt_artifacts`         dbt's manifest and run results → datasets, tests
:mod:`.openlineage`           a step or job → OpenLineage events (facets)
:mod:`.emitter`               deliver those events off the task path, spooled
============================  ================================================
"""

from __future__ import annotations

from pudato.lineage.formats import format_trace
from pudato.lineage.graph import Direction, trace

__all__ = ["Direction", "format_trace", "trace"]
