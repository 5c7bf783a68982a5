"""The registry's dataset side: the catalog, and every recorded version of a dataset."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from pudato.errors import NotFound
from pudato.protocol import utcnow
from pudato.registry.database import session_scope
from pudato.registry.models import Dataset, Job, Step, StepDataset, as_dict


class DatasetRecords:
    """Dataset queries of :class:`~pudato.registry.repository.Registry`, on the database at ``url``."""

    url: str

    def dataset_history(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every recorded version of a dataset, oldest first: what each writing step recorded of it,
        with the job, the step and the logic SHA that wrote it. Without ``namespace``, any namespace."""
        query = (
            select(StepDataset, Step, Job)
            .join(Step, Step.id == StepDataset.step_id)
            .join(Job, Job.id == Step.job_id)
            .where(StepDataset.direction == "output", StepDataset.name == name, Step.status == "succeeded")
            .order_by(Step.finished_at, StepDataset.id)
        )
        if namespace is not None:
            query = query.where(StepDataset.namespace == namespace)
        with session_scope(self.url) as session:
            return [
                {
                    "namespace": edge.namespace, "name": edge.name, "facets": edge.facets or {},
                    "written_at": step.finished_at, "job_id": job.id, "job_name": job.name, "trigger": job.trigger,
                    "step_id": step.id, "step_name": step.name, "handler": step.handler, "action": step.action,
                    "logic_version": step.logic_version or job.logic_version,
                }
                for edge, step, job in session.execute(query)
            ]

    # -- catalog -------------------------------------------------------------

    def register_dataset(
        self, namespace: str, name: str, description: str | None, tags: list[str], facets: dict[str, Any]
    ) -> dict[str, Any]:
        now = utcnow()
        with session_scope(self.url) as session:
            dataset = session.execute(
                select(Dataset).where(Dataset.namespace == namespace, Dataset.name == name)
            ).scalar_one_or_none()
            if dataset is None:
                dataset = Dataset(namespace=namespace, name=name, created_at=now, facets={}, tags=[])
                session.add(dataset)
            if description is not None:
                dataset.description = description
            dataset.tags = sorted(set(dataset.tags or []) | set(tags))
            dataset.facets = {**(dataset.facets or {}), **facets}
            dataset.updated_at = now
            session.flush()
            return as_dict(dataset)

    def get_dataset(self, namespace: str, name: str) -> dict[str, Any]:
        with session_scope(self.url) as session:
            dataset = session.execute(
                select(Dataset).where(Dataset.namespace == namespace, Dataset.name == name)
            ).scalar_one_or_none()
            if dataset is None:
                raise NotFound(f"dataset {namespace} {name} is not in the catalog", namespace=namespace, name=name)
            return as_dict(dataset)

    def search_datasets(
        self, text: str | None = None, namespace: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        with session_scope(self.url) as session:
            query = select(Dataset).order_by(Dataset.namespace, Dataset.name).limit(limit)
            if namespace:
                query = query.where(Dataset.namespace == namespace)
            if text:
                pattern = f"%{text.lower()}%"
                query = query.where(
                    or_(Dataset.name.ilike(pattern), Dataset.description.ilike(pattern))
                )
            return [as_dict(d) for d in session.scalars(query)]

