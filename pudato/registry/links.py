"""Keep ``lineage_links`` (one row per dataset pair) in step with the edges a finished step records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pudato.registry.models import LineageLink

Pair = tuple[str, str, str, str]  # source namespace, source name, target namespace, target name


def upsert_links(session: Session, pairs: list[Pair], step_id: str, job_id: str,
                 logic_version: str | None, at: datetime) -> None:
    """Insert new pairs, refresh known ones; sorted so two writers lock rows in the same order."""
    if not pairs:
        return
    rows: list[dict[str, Any]] = [
        {"source_namespace": p[0], "source_name": p[1], "target_namespace": p[2], "target_name": p[3],
         "step_id": step_id, "job_id": job_id, "logic_version": logic_version,
         "first_seen_at": at, "last_seen_at": at, "runs": 1}
        for p in sorted(set(pairs))
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(LineageLink).values(rows)
    excluded = statement.excluded
    session.execute(statement.on_conflict_do_update(
        index_elements=["target_namespace", "target_name", "source_namespace", "source_name"],
        set_={"step_id": excluded.step_id, "job_id": excluded.job_id, "logic_version": excluded.logic_version,
              "last_seen_at": excluded.last_seen_at, "runs": LineageLink.runs + 1},
    ))
