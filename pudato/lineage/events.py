"""A step or a job, as OpenLineage run events built with the ``openlineage-python`` client.

Every step is a run whose id is the step id; every job is a run whose id is the
job id, and each step names it in a ``parent`` run facet. A step sends START
when it starts and COMPLETE or FAIL when it finishes; a step the broker
dead-lettered sends ABORT. A job sends START with its first step and COMPLETE
or FAIL when the registry rolls its status up to a terminal one.

What each event carries:

* datasets: ``schema``, ``dataSource``, ``version`` (S3 version id, lake
  snapshot or commit SHA), ``outputStatistics`` (rows, bytes), dbt tests as
  ``dataQualityAssertions`` and, for dbt models, ``columnLineage``;
* the job: ``jobType``, ``sourceCodeLocation`` (repository URL, full SHA, path)
  and ``sql``; the run: ``processing_engine``, ``parent`` and ``errorMessage``.

Ids that are not UUIDs (hand-written ids in tests) become a UUID5 of the id, so
every event is valid and the same id always maps to the same run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    BaseFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
    source_code_location_job,
    sql_job,
)

from pudato import __version__
from pudato.lineage.columns import column_lineage
from pudato.registry.repository import StepUpdate

PRODUCER = f"urn:pudato:{__version__}"
SQL_MAX = 100_000
_ENGINE_PACKAGES = {"dbt": "dbt-core", "duckdb": "duckdb"}


@dataclass(frozen=True)
class JobContext:
    """What the registry knows of a step's job: its name, its logic pin, when it started."""

    job_id: str
    name: str | None = None
    logic_repo: str | None = None
    logic_version: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def run_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pudato:{text}"))


def job_name(job: JobContext) -> str:
    return job.name or f"job.{job.job_id}"


def step_job_name(update: StepUpdate, job: JobContext) -> str:
    step = update.name or f"{update.handler}.{update.action}"
    return f"{job.name}.{step}" if job.name else step


def is_dead_lettered(update: StepUpdate) -> bool:
    return update.event == "finished" and (update.error or {}).get("type") == "DeadLettered"


def step_event(update: StepUpdate, job: JobContext, namespace: str) -> RunEvent | None:
    """The event one step update means, or None (a retry or a lost attempt is not a run state)."""
    if update.event == "started":
        state, at = RunState.START, update.started_at or update.at
    elif update.event == "finished":
        state = RunState.ABORT if is_dead_lettered(update) else (
            RunState.COMPLETE if update.status == "succeeded" else RunState.FAIL)
        at = update.finished_at or update.at
    else:
        return None
    run_facets: dict[str, Any] = {"processing_engine": _engine(update)}
    if job.job_id != update.step_id:
        parent = job_name(job)
        run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run_id(job.job_id)),
            job=parent_run.Job(namespace=namespace, name=parent),
            root=parent_run.Root(run=parent_run.RootRun(runId=run_id(job.job_id)),
                                 job=parent_run.RootJob(namespace=namespace, name=parent)),
        )
    if update.error and state in (RunState.FAIL, RunState.ABORT):
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=f"{update.error.get('type', 'Error')}: {update.error.get('message', '')}",
            programmingLanguage="python",
        )
    inputs = [_dataset(ref.model_dump(mode="json"), update) for ref in update.inputs or []]
    outputs = [_dataset(ref.model_dump(mode="json"), update, output=True) for ref in update.outputs or []]
    return RunEvent(
        eventType=state,
        eventTime=_time(at),
        run=Run(runId=run_id(update.step_id), facets=run_facets),
        job=Job(namespace=namespace, name=step_job_name(update, job), facets=_job_facets(update, job)),
        inputs=[InputDataset(namespace=d["namespace"], name=d["name"], facets=d["facets"],
                             inputFacets=d["io"]) for d in inputs],
        outputs=[OutputDataset(namespace=d["namespace"], name=d["name"], facets=d["facets"],
                               outputFacets=d["io"]) for d in outputs],
        producer=PRODUCER,
    )


def job_event(job: JobContext, namespace: str, status: str | None, at: datetime) -> RunEvent:
    """The job's own run: START (``status`` None), COMPLETE or FAIL."""
    state = RunState.START if status is None else RunState.COMPLETE if status == "succeeded" else RunState.FAIL
    facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="PUDATO", jobType="JOB")
    }
    if job.logic_repo and job.logic_version:
        facets["sourceCodeLocation"] = _source_location(job.logic_repo, job.logic_version, None)
    run_facets: dict[str, Any] = {}
    if state is RunState.FAIL:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message="a step of the job failed", programmingLanguage="python")
    return RunEvent(
        eventType=state,
        eventTime=_time(at),
        run=Run(runId=run_id(job.job_id), facets=run_facets),
        job=Job(namespace=namespace, name=job_name(job), facets=facets),
        producer=PRODUCER,
    )


# -- facets -------------------------------------------------------------------------


def _job_facets(update: StepUpdate, job: JobContext) -> dict[str, Any]:
    facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="PUDATO", jobType=f"{update.handler}.{update.action}".upper())
    }
    payload = update.payload or {}
    repo = job.logic_repo or (payload.get("repo") if isinstance(payload.get("repo"), str) else None)
    sha = update.logic_version or job.logic_version
    if repo and sha:
        facets["sourceCodeLocation"] = _source_location(repo, sha, _code_path(update))
    sql = _sql(update)
    if sql:
        facets["sql"] = sql_job.SQLJobFacet(query=sql, dialect="duckdb")
    return facets


def _source_location(repo: str, sha: str, path: str | None) -> BaseFacet:
    url = repo if "://" in repo else f"file://{repo}"
    return source_code_location_job.SourceCodeLocationJobFacet(
        type="git", url=url, repoUrl=url, version=sha, path=path)


def _code_path(update: StepUpdate) -> str | None:
    """The file a dbt step ran when it built one model; the project root when several."""
    paths = sorted({n["path"] for n in (update.data or {}).get("nodes") or [] if n.get("path")})
    if len(paths) == 1:
        return str(paths[0])
    return "." if paths else None


def _sql(update: StepUpdate) -> str | None:
    payload_sql = (update.payload or {}).get("sql")
    if isinstance(payload_sql, str):
        return payload_sql[:SQL_MAX]
    compiled = [n["compiled_code"] for n in (update.data or {}).get("nodes") or [] if n.get("compiled_code")]
    return ";\n\n".join(compiled)[:SQL_MAX] or None


def _engine(update: StepUpdate) -> BaseFacet:
    engines = [e.get("engine") for e in update.executions or [] if isinstance(e, dict)]
    name = "dbt" if "dbt" in engines else engines[0] if engines else "pudato"
    try:
        version = metadata.version(_ENGINE_PACKAGES[name]) if name in _ENGINE_PACKAGES else __version__
    except metadata.PackageNotFoundError:
        version = "unknown"
    return processing_engine_run.ProcessingEngineRunFacet(
        version=version, name=name, openlineageAdapterVersion=metadata.version("openlineage-python"))


def _dataset(ref: dict[str, Any], update: StepUpdate, output: bool = False) -> dict[str, Any]:
    namespace, name, given = ref["namespace"], ref["name"], ref.get("facets") or {}
    facets: dict[str, Any] = {
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name=namespace, uri="file:///" if namespace == "file" else namespace),
    }
    columns = given.get("columns")
    if isinstance(columns, list) and columns:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name=str(c.get("name")), type=c.get("type"))
            for c in columns if isinstance(c, dict)])  # fmt: skip
    version = given.get("version") or given.get("snapshot_id") or given.get("sha256") or given.get("etag")
    if version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version))
    assertions = _assertions(ref, update)
    io: dict[str, Any] = {}
    if output:
        lineage = column_lineage(ref, [*(update.inputs or []), *(update.outputs or [])])
        if lineage:
            facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(fields={
                column: column_lineage_dataset.Fields(inputFields=[
                    column_lineage_dataset.InputField(namespace=ns, name=table, field=column, transformations=[
                        column_lineage_dataset.Transformation(type="DIRECT", subtype="TRANSFORMATION",
                                                              description="same column name in a dbt parent")])
                    for ns, table in parents])
                for column, parents in lineage.items()})  # fmt: skip
        rows = given.get("rows", given.get("rows_affected"))
        size = given.get("size")
        if isinstance(rows, int) or isinstance(size, int):
            io["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=rows if isinstance(rows, int) else None, size=size if isinstance(size, int) else None)
        if assertions:
            # The tests ran after the model was built, in the same step: they describe this output.
            facets["dataQualityAssertions"] = assertions
    elif assertions:
        io["dataQualityAssertions"] = assertions
    return {"namespace": namespace, "name": name, "facets": facets, "io": io}


def _assertions(ref: dict[str, Any], update: StepUpdate) -> BaseFacet | None:
    """The dbt tests of this dataset that ran in the step, as data-quality assertions."""
    data = update.data or {}
    relations = {n.get("unique_id"): n.get("relation") for n in data.get("nodes") or []}
    found = []
    for test in data.get("tests") or []:
        model = test.get("attached_node") or next(iter(test.get("models") or []), None)
        if relations.get(model) != ref["name"] or test.get("status") not in ("pass", "fail", "warn", "error"):
            continue
        found.append(data_quality_assertions_dataset.Assertion(
            assertion=test.get("test_name") or str(test.get("unique_id", "test")).split(".")[2],
            success=test.get("status") == "pass", column=test.get("column"), name=test.get("unique_id")))
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=found) if found else None


def _time(at: datetime) -> str:
    return at.isoformat()
