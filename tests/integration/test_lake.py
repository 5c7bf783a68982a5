"""The lake across two worker "hosts": nothing shared on disk, only SQS, S3 and PostgreSQL.

Each host is a set of worker processes with its own state folder (liveness, logic
cache, DuckDB extensions, spool, a DuckDB file path that must stay unused). The
session stack's table, query and transform workers are stopped for this module,
so every warehouse step runs on one of the two hosts, and the step records say which.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import commit

from pudato import devstack, jobs
from pudato.backends.warehouse import warehouse_backend

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WAREHOUSE_HANDLERS = ("table", "query", "transform")
ROWS = "id,name,amount\n" + "".join(f"{i},name {i},{i * 1.5}\n" for i in range(1, 501))
PROJECT = (
    "name: hosts\nversion: '1.0.0'\nconfig-version: 2\nprofile: hosts\nmodels:\n  hosts:\n    +materialized: table\n"
)
SOURCES = "version: 2\nsources:\n  - name: raw\n    schema: main\n    tables:\n      - name: lake_people\n"
MODEL = "select count(*) as n, sum(amount) as total from {{ source('raw', 'lake_people') }}\n"


class Host:
    """Worker processes with their own folders, started with their own environment."""

    def __init__(self, name: str, root: Path, stack: Any) -> None:
        self.name, self.root = name, root
        self.env = {
            **stack.env,
            "PUDATO_WORKER__LIVENESS_DIR": str(root / "liveness"),
            "PUDATO_LOGIC__CACHE_DIR": str(root / "logic"),
            "PUDATO_WAREHOUSE__EXTENSION_DIR": str(root / "duckdb_extensions"),
            "PUDATO_WAREHOUSE__PATH": str(root / "unused.duckdb"),
            "PUDATO_REGISTRY__SPOOL_DIR": str(root / "spool"),
        }
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, handler: str) -> None:
        name = f"{handler}-{self.name}"
        self.workers[handler] = devstack.start_worker(handler, self.env, log_dir=self.root / "logs", cwd=REPO,
                                                   name=name)  # fmt: skip
        devstack.wait_for_worker(self.workers[handler], name)

    def stop(self, handler: str) -> None:
        devstack.stop(self.workers.pop(handler))

    def stop_all(self) -> None:
        for handler in list(self.workers):
            self.stop(handler)


@pytest.fixture(scope="module")
def hosts(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Host]]:
    for handler in WAREHOUSE_HANDLERS:
        devstack.stop(stack.workers[handler])
    made = {name: Host(name, tmp_path_factory.mktemp(f"host-{name}"), stack) for name in ("a", "b")}
    try:
        made["a"].start("table")
        made["b"].start("query")
        made["b"].start("transform")
        yield made
    finally:
        for host in made.values():
            host.stop_all()
        for handler in WAREHOUSE_HANDLERS:  # give the rest of the session its workers back
            stack.workers[handler] = devstack.start_worker(handler, stack.env, log_dir=stack.state / "logs", cwd=REPO)
        for handler in WAREHOUSE_HANDLERS:
            devstack.wait_for_worker(stack.workers[handler], handler)


@pytest.fixture(scope="module")
def people_csv(stack: Any) -> str:
    stack.client("s3").put_object(Bucket="pudato-test", Key="lake/people.csv", Body=ROWS.encode())
    return "lake/people.csv"


def _logic_repo(root: Path, files: dict[str, str] | None = None) -> tuple[str, str]:
    files = files or {"dbt_project.yml": PROJECT, "models/sources.yml": SOURCES, "models/people_totals.sql": MODEL}
    return str(root), commit(root, files, "people totals")


def _only_step(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
    (step,) = job["steps"]
    return step


def _host_of(step: dict[str, Any]) -> str:
    return str(step["worker"]).split("@")[0].rsplit("-", 1)[-1]


def test_a_table_loaded_on_one_host_is_queried_and_built_on_by_dbt_on_the_other(
    stack: Any, hosts: dict[str, Host], people_csv: str, tmp_path: Path
) -> None:
    load = _only_step(jobs.wait(jobs.submit(jobs.step("table", "load", table="lake_people", key=people_csv)).job_id,
                                timeout=180))  # fmt: skip
    assert _host_of(load) == "a"
    (written,) = load["outputs"]
    assert written["namespace"] == "ducklake://pudato_lake"
    assert written["facets"]["rows"] == 500
    assert isinstance(written["facets"]["snapshot_id"], int)
    (source,) = load["inputs"]
    assert source["facets"]["version"]  # the S3 version id
    assert len(source["facets"]["sha256"]) == 64

    query = _only_step(
        jobs.wait(
            jobs.submit(
                jobs.step("query", "run", sql="select count(*) as n, sum(amount) as total from lake_people")
            ).job_id,
            timeout=180,
        )
    )
    assert _host_of(query) == "b"
    # amounts like 1.5 load as DECIMAL (money is never floating point), which JSON carries as text
    assert query["data"]["rows"] == [[500, "187875.0"]]
    (read,) = query["inputs"]
    assert read["name"] == "main.lake_people"
    assert read["facets"]["snapshot_id"] >= written["facets"]["snapshot_id"]
    assert read["facets"]["schema_fingerprint"] == written["facets"]["schema_fingerprint"]

    url, sha = _logic_repo(tmp_path / "logic")
    build = _only_step(jobs.wait(jobs.submit(jobs.step("transform", "build"), logic_repo=url, logic_ref="main",
                                             logic_version=sha).job_id, timeout=300))  # fmt: skip
    assert _host_of(build) == "b"
    (model,) = build["outputs"]
    assert model["name"] == "main.people_totals"
    assert model["facets"]["rows"] == 1
    assert model["facets"]["snapshot_id"] > written["facets"]["snapshot_id"]
    (dbt_source,) = build["inputs"]
    assert dbt_source["name"] == "main.lake_people"
    assert dbt_source["facets"]["rows"] == 500
    with warehouse_backend(stack.settings()).session(read_only=True) as session:
        assert session.rows("select n, CAST(total AS DOUBLE) from people_totals") == [(500, 187875.0)]


def test_four_concurrent_loads_into_one_table_lose_no_row(stack: Any, hosts: dict[str, Host], people_csv: str) -> None:
    hosts["b"].start("table")
    try:
        created = jobs.wait(jobs.submit(jobs.step("table", "load", table="lake_appended", key=people_csv)).job_id,
                            timeout=180)  # fmt: skip
        _only_step(created)
        loads = jobs.group(*[jobs.step("table", "load", table="lake_appended", key=people_csv, mode="append")
                             for _ in range(4)])  # fmt: skip
        job = jobs.wait(jobs.submit(loads).job_id, timeout=300)
    finally:
        hosts["b"].stop("table")
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
    assert {_host_of(s) for s in job["steps"]} == {"a", "b"}
    lake = warehouse_backend(stack.settings())
    assert lake.table_version("lake_appended").rows == 5 * 500
    with lake.session(read_only=True) as session:
        assert session.rows("select count(distinct id), min(c), max(c) from "
                            "(select id, count(*) as c from lake_appended group by id)") == [(500, 5, 5)]  # fmt: skip


def test_four_concurrent_loads_into_four_tables_all_land(stack: Any, hosts: dict[str, Host], people_csv: str) -> None:
    hosts["b"].start("table")
    try:
        loads = jobs.group(*[jobs.step("table", "load", table=f"lake_part_{n}", key=people_csv) for n in range(4)])
        job = jobs.wait(jobs.submit(loads).job_id, timeout=300)
    finally:
        hosts["b"].stop("table")
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
    lake = warehouse_backend(stack.settings())
    assert [lake.table_version(f"lake_part_{n}").rows for n in range(4)] == [500] * 4
    snapshots = {s["outputs"][0]["facets"]["snapshot_id"] for s in job["steps"]}
    assert len(snapshots) == 4  # four commits, four snapshots


def test_four_concurrent_replaces_of_one_table_are_retried_and_one_lands_whole(
    stack: Any, hosts: dict[str, Host]
) -> None:
    s3 = stack.client("s3")
    rows = 20_000  # enough that each load takes a while, so that four of them overlap even on a busy machine
    for n in range(4):  # each load's rows say which load they came from
        body = "id,load\n" + "".join(f"{i},{n}\n" for i in range(1, rows + 1))
        s3.put_object(Bucket="pudato-test", Key=f"lake/replace_{n}.csv", Body=body.encode())
    # Two processes per host, four in all: the four replaces run at once and commit against each other.
    started = {}
    for name, host in hosts.items():
        if "table" in host.workers:
            host.stop("table")
        started[name] = devstack.start_worker("table", host.env, concurrency=2, log_dir=host.root / "logs",
                                              cwd=REPO, name=f"table-{name}")  # fmt: skip
        host.workers["table"] = started[name]
    for name, process in started.items():
        devstack.wait_for_worker(process, f"table-{name}")
    logs = [host.root / "logs" / f"table-{name}.log" for name, host in hosts.items()]
    already = [path.stat().st_size for path in logs]  # what earlier tests' loads logged is not this test's
    # Nothing forces four loads to overlap on a busy machine: up to five rounds, until one conflict is seen.
    retried, rounds = 0, 0
    try:
        while retried == 0 and rounds < 5:
            rounds += 1
            loads = jobs.group(*[jobs.step("table", "load", table="lake_replaced", key=f"lake/replace_{n}.csv",
                                           mode="replace") for n in range(4)])  # fmt: skip
            job = jobs.wait(jobs.submit(loads).job_id, timeout=300)
            assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
            assert len(job["steps"]) == 4
            lake = warehouse_backend(stack.settings())
            with lake.session(read_only=True) as session:
                # One load whole: all its rows and no row of another.
                counted = session.rows('select count(*), count(distinct id), count(distinct "load") from lake_replaced')
            assert counted == [(rows, rows, 1)]
            logged = "".join(path.read_bytes()[offset:].decode(errors="replace")
                             for path, offset in zip(logs, already, strict=True))  # fmt: skip
            retried = logged.count("write conflict, attempt")
    finally:
        hosts["b"].stop("table")  # host b has no table worker in the other tests
    print(f"\nfour concurrent replaces of one table, {rounds} round(s): {retried} write conflicts retried")
    assert retried >= 1, "no write conflict was provoked; the four replaces did not overlap"


def test_a_dbt_seed_on_the_lake_records_its_snapshot_rows_and_schema(
    stack: Any, hosts: dict[str, Host], tmp_path: Path
) -> None:
    codes = "code,label\nn,North\ns,South\nw,West\n"
    url, sha = _logic_repo(tmp_path / "seeds", {"dbt_project.yml": PROJECT, "seeds/lake_codes.csv": codes})
    seeded = _only_step(jobs.wait(jobs.submit(jobs.step("transform", "seed"), logic_repo=url, logic_ref="main",
                                              logic_version=sha).job_id, timeout=300))  # fmt: skip
    (seed,) = seeded["outputs"]
    assert seed["name"] == "main.lake_codes"
    assert seed["namespace"] == "ducklake://pudato_lake"
    assert isinstance(seed["facets"]["snapshot_id"], int)
    assert seed["facets"]["rows"] == 3
    assert seed["facets"]["schema_fingerprint"]
    now = warehouse_backend(stack.settings()).table_version("lake_codes")
    assert now.schema_fingerprint == seed["facets"]["schema_fingerprint"]
    assert now.snapshot_id is not None
    assert now.snapshot_id >= seed["facets"]["snapshot_id"]
