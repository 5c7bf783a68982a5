"""How lineage queries scale with the history: 10k, 100k and 1M recorded steps on PostgreSQL.

The registry is filled through the repository API (``Registry.create_job`` and
``Registry.apply``, what the workers' signals call), in rounds of three
realistic shapes, each a job:

* a dbt-sized pipeline: 10 files loaded into 10 raw tables, then one dbt build of
  40 models (staging, intermediate, marts) with model-level ``derived_from``;
* a long chain: 50 steps, each reading the table the previous one wrote;
* a wide fan-in: 200 partition files written, then one step reading all 200.

Every round reruns the pipelines of its group (new versions of the same datasets),
and every ``ROUNDS_PER_GROUP`` rounds a new group of pipelines appears, so both
the history and the graph grow, the history much faster, as in a real registry.

At each size it times depth-10 upstream and downstream traces from the mart, the
chain's end, the fan-in target and the raw files, and prints p50, p95 and the
growth of p50 from 10k to 1M. Run: ``python -m bench.lineage_scale [--sizes 10000,100000,1000000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pudato import datasets, devstack
from pudato.lineage.graph import trace
from pudato.protocol import DataReference, utcnow
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry, StepPlan, StepUpdate

LAKE = datasets.lake_namespace("lake")
ROUNDS_PER_GROUP = 40
CHAIN = 50
FAN_IN = 200
SAMPLES = 200


def _ref(name: str, version: int, parents: list[str] | None = None) -> DataReference:
    facets: dict[str, Any] = {"snapshot_id": version, "rows": 100}
    if parents is not None:
        facets["derived_from"] = [{"namespace": LAKE, "name": p} for p in parents]
    return datasets.warehouse_table(LAKE, name, **facets)


def _file(group: int, name: str, version: int) -> DataReference:
    return datasets.s3_object(f"raw-{group}", name, version=f"v{version}", size=2048)


def _dbt_round(group: int, version: int) -> list[tuple[str, list[DataReference], list[DataReference]]]:
    steps = []
    raws = []
    for i in range(10):
        raw = f"raw_g{group}.t{i}"
        raws.append(raw)
        steps.append(("table", [_file(group, f"dbt/f{i}.csv", version)], [_ref(raw, version)]))
    staging = [_ref(f"stg_g{group}.s{i}", version, [raws[i % 10]]) for i in range(20)]
    inter = [_ref(f"int_g{group}.i{i}", version, [f"stg_g{group}.s{i}", f"stg_g{group}.s{i + 10}"])
             for i in range(10)]
    marts = [_ref(f"mart_g{group}.m{i}", version, [f"int_g{group}.i{i}", f"int_g{group}.i{(i + 1) % 10}"])
             for i in range(10)]
    steps.append(("transform", [_ref(r, version) for r in raws], staging + inter + marts))
    return steps


def _chain_round(group: int, version: int) -> list[tuple[str, list[DataReference], list[DataReference]]]:
    steps = [("table", [_file(group, "chain/start.csv", version)], [_ref(f"chain_g{group}.c0", version)])]
    for i in range(1, CHAIN):
        steps.append(("query", [_ref(f"chain_g{group}.c{i - 1}", version)], [_ref(f"chain_g{group}.c{i}", version)]))
    return steps


def _fan_in_round(group: int, version: int) -> list[tuple[str, list[DataReference], list[DataReference]]]:
    files = [_file(group, f"fan/p{i:03d}.parquet", version) for i in range(FAN_IN)]
    steps: list[tuple[str, list[DataReference], list[DataReference]]] = [("storage", [], [f]) for f in files]
    steps.append(("table", files, [_ref(f"fan_g{group}.all", version)]))
    return steps


def _rounds() -> Iterator[tuple[int, int, list[tuple[str, list[DataReference], list[DataReference]]]]]:
    number = 0
    while True:
        group, version = divmod(number, ROUNDS_PER_GROUP)
        for make in (_dbt_round, _chain_round, _fan_in_round):
            yield group, version, make(group, version)
        number += 1


@contextmanager
def one_transaction(url: str) -> Iterator[None]:
    """Run the repository's own writes for a whole job in one transaction: the same code, one commit."""
    from pudato.registry import repository

    real = repository.__dict__["session_scope"]
    with real(url) as session:
        setattr(repository, "session_scope", lambda _url: nullcontext(session))  # noqa: B010
        try:
            yield
        finally:
            setattr(repository, "session_scope", real)  # noqa: B010


def fill(registry: Registry, target: int, rounds: Iterator[Any], recorded: int) -> tuple[int, int]:
    """Record whole jobs until ``target`` steps are in the registry; returns (steps, highest group)."""
    group = 0
    while recorded < target:
        with one_transaction(registry.url):
            group, recorded = _record_job(registry, rounds, recorded)
    return recorded, group


def _record_job(registry: Registry, rounds: Iterator[Any], recorded: int) -> tuple[int, int]:
    if True:
        group, _, steps = next(rounds)
        job_id = str(uuid.uuid4())
        ids = [str(uuid.uuid4()) for _ in steps]
        registry.create_job(job_id, [StepPlan(step_id=i, handler=h, action="run", position=n)
                                     for n, (i, (h, _, _)) in enumerate(zip(ids, steps, strict=True))],
                            name=f"pipeline-{group}", logic_version="f" * 40)  # fmt: skip
        for step_id, (handler, inputs, outputs) in zip(ids, steps, strict=True):
            now = utcnow()
            registry.apply(StepUpdate(event="finished", step_id=step_id, job_id=job_id, handler=handler,
                                      action="run", status="succeeded", started_at=now, finished_at=now,
                                      inputs=inputs, outputs=outputs, logic_version="f" * 40))  # fmt: skip
        recorded += len(steps)
    return group, recorded


def probes(groups: list[str]) -> list[tuple[str, str, str]]:
    """(namespace, name, direction) of the traces to time, spread over every group recorded so far."""
    found = []
    for group in groups:
        found += [
            (LAKE, f"mart_g{group}.m3", "upstream"),
            (LAKE, f"chain_g{group}.c{CHAIN - 1}", "upstream"),
            (LAKE, f"fan_g{group}.all", "upstream"),
            (f"s3://raw-{group}", "dbt/f3.csv", "downstream"),
            (f"s3://raw-{group}", "chain/start.csv", "downstream"),
        ]
    return found


# Beyond --api-steps, the history recorded through the API is copied in SQL, every row of every
# table the repository writes, under new ids and new group names (``_g3.`` → ``_g3c2.``): the same
# rows ``Registry.apply`` would write for those jobs, at the speed PostgreSQL copies them.
_RENAME = ("regexp_replace(regexp_replace({col}, '_g([0-9]+)\\.', '_g\\1c{k}.', 'g'), "
           "'raw-([0-9]+)', 'raw-\\1c{k}', 'g')")
_CLONES = {
    "jobs": {"id": "id || 'c{k}'", "name": "name || 'c{k}'"},
    "steps": {"id": "id || 'c{k}'", "job_id": "job_id || 'c{k}'", "inputs": "{rename_json}",
              "outputs": "{rename_json}"},
    "step_datasets": {"step_id": "step_id || 'c{k}'", "namespace": "{rename}", "name": "{rename}",
                      "facets": "{rename_json}"},
    "lineage_edges": {"step_id": "step_id || 'c{k}'", "job_id": "job_id || 'c{k}'",
                      "source_namespace": "{rename}", "source_name": "{rename}",
                      "target_namespace": "{rename}", "target_name": "{rename}"},
    "lineage_links": {"step_id": "step_id || 'c{k}'", "job_id": "job_id || 'c{k}'",
                      "source_namespace": "{rename}", "source_name": "{rename}",
                      "target_namespace": "{rename}", "target_name": "{rename}"},
    "datasets": {"namespace": "{rename}", "name": "{rename}", "last_step_id": "last_step_id || 'c{k}'",
                 "last_job_id": "last_job_id || 'c{k}'"},
}


def clone_history(url: str, k: int, original_jobs: int) -> None:
    """Copy the first ``original_jobs`` API-recorded jobs' rows once more, as clone ``k``."""
    from sqlalchemy import text

    from pudato.registry.database import session_scope
    from pudato.registry.models import Base

    with session_scope(url) as session:
        # What was recorded through the API, fixed before the first copy.
        session.execute(text("CREATE TABLE IF NOT EXISTS bench_original_jobs AS "
                             "SELECT id FROM jobs ORDER BY submitted_at LIMIT :n"), {"n": original_jobs})
        session.execute(text("CREATE TABLE IF NOT EXISTS bench_original_links AS SELECT id FROM lineage_links"))
        session.execute(text("CREATE TABLE IF NOT EXISTS bench_original_datasets AS SELECT id FROM datasets"))
        wheres = {
            "jobs": "WHERE id IN (SELECT id FROM bench_original_jobs)",
            "steps": "WHERE job_id IN (SELECT id FROM bench_original_jobs)",
            "step_datasets": "WHERE step_id IN (SELECT id FROM steps WHERE job_id IN "
                             "(SELECT id FROM bench_original_jobs))",
            "lineage_edges": "WHERE job_id IN (SELECT id FROM bench_original_jobs)",
            "lineage_links": "WHERE id IN (SELECT id FROM bench_original_links)",
            "datasets": "WHERE id IN (SELECT id FROM bench_original_datasets)",
        }
        for table, changes in _CLONES.items():
            serial = table in ("step_datasets", "lineage_edges", "lineage_links", "datasets")
            columns = [c.name for c in Base.metadata.tables[table].columns if not (serial and c.name == "id")]
            exprs = []
            for column in columns:
                rename = _RENAME.format(col=column, k=k)
                rename_json = f"CAST({_RENAME.format(col=f'CAST({column} AS TEXT)', k=k)} AS JSON)"
                exprs.append(changes.get(column, column).format(k=k, rename=rename, rename_json=rename_json))
            session.execute(text(f"INSERT INTO {table} ({', '.join(columns)}) "
                                 f"SELECT {', '.join(exprs)} FROM {table} {wheres[table]}"))


def time_traces(registry: Registry, groups: list[str]) -> dict[str, float]:
    chosen = random.Random(7).choices(probes(groups), k=SAMPLES)
    trace(registry, chosen[0][0], chosen[0][1], "upstream", max_depth=10)  # warm the connection
    timings, edges = [], []
    for namespace, name, direction in chosen:
        clock = time.perf_counter()
        found = trace(registry, namespace, name, direction, max_depth=10)  # type: ignore[arg-type]
        timings.append((time.perf_counter() - clock) * 1000)
        edges.append(len(found))
    timings.sort()
    return {"p50_ms": statistics.median(timings), "p95_ms": timings[int(len(timings) * 0.95) - 1],
            "edges_median": statistics.median(edges)}


def _count(registry: Registry, table: str) -> int:
    from sqlalchemy import text

    from pudato.registry.database import session_scope

    with session_scope(registry.url) as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--api-steps", type=int, default=100_000,
                        help="record this many steps through Registry.apply; copy that history in SQL beyond it")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with devstack.postgres_cluster() as postgres:
        url = str(postgres["url"])
        upgrade(url)
        registry = Registry(url)
        rounds, recorded, results, clones = _rounds(), 0, [], 0
        groups: list[str] = []
        started = time.perf_counter()
        for size in sizes:
            if size <= args.api_steps or (clones == 0 and recorded < args.api_steps):
                recorded, last = fill(registry, min(size, args.api_steps), rounds, recorded)
                groups = [str(g) for g in range(last + 1)]
                api_recorded, api_groups = recorded, list(groups)
            while recorded < size:
                clones += 1
                clone_history(url, clones, _count(registry, "jobs") if clones == 1 else 0)
                recorded += api_recorded
                groups += [f"{g}c{clones}" for g in api_groups]
            _analyze(url)
            timing = time_traces(registry, groups)
            results.append((size, timing))
            how = f"({api_recorded:,} through the API, {clones} SQL copies)" if clones else "(all through the API)"
            print(f"{_count(registry, 'steps'):>9,} steps {how}  links {_count(registry, 'lineage_links'):,}  "
                  f"edges {_count(registry, 'lineage_edges'):,}  filled at {time.perf_counter() - started:,.0f}s  "
                  f"depth-10 trace p50 {timing['p50_ms']:.2f} ms  p95 {timing['p95_ms']:.2f} ms  "
                  f"median edges returned {timing['edges_median']:.0f}", flush=True)
        if len(results) > 1:
            growth = results[-1][1]["p50_ms"] / results[0][1]["p50_ms"]
            print(f"p50 growth {results[0][0]:,} → {results[-1][0]:,} steps: {growth:.2f}x "
                  f"(aims: ≤ 3x, and p50 under 100 ms at the largest size)")


def _analyze(url: str) -> None:
    from sqlalchemy import text

    from pudato.registry.database import get_engine

    with get_engine(url).connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


if __name__ == "__main__":
    os.environ.setdefault("PUDATO_REGISTRY__SPOOL_DIR", "/tmp/pudato-bench-spool")
    main()
