"""dbt on the analysts' logic repository, through SQS and real transform workers.

The tests make real git repositories, submit pipelines pinned to a commit, and
read the registry and the warehouse that the workers wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import commit as _commit
from helpers import git

from pudato import datasets, devstack, jobs, lineage, pipelines
from pudato.backends.warehouse import WarehouseBackend, warehouse_backend
from pudato.demo import ingest_steps, make_logic_repo
from pudato.errors import NotFound, UnsafeInput

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MACRO = (REPO / "dbt" / "macros" / "pudato_columns.sql").read_text()
PROJECT = "name: tiny\nversion: '1.0.0'\nconfig-version: 2\nprofile: tiny\nmodels:\n  tiny:\n    +materialized: table\n"
SOURCES = "version: 2\nsources:\n  - name: raw\n    schema: main\n    tables:\n      - name: tiny_orders\n"
STAGING = "select id::int as id, amount::double as amount, {{ pudato_version_columns() }}\n" \
          "from {{ source('raw', 'tiny_orders') }}\n"
MART = "select count(*) as n, sum(amount) as total, '{variant}' as variant, {{{{ pudato_version_columns() }}}}\n" \
       "from {{{{ ref('tiny_stg_orders') }}}}\n"
PIPELINE = """\
name: tiny
steps:
  - {name: load, handler: table, action: load, payload: {table: tiny_orders, key: tiny/orders.csv}}
  - {name: build, handler: transform, action: build, payload: {select: [tiny_stg_orders, tiny_fct_totals]}}
"""
ORDERS = "id,amount\n1,10.5\n2,20\n3,30.25\n"


@pytest.fixture(scope="module")
def tiny(stack, tmp_path_factory):
    """A logic repository: commit A on main, and branches for B, a broken model, and two side models."""
    repo = tmp_path_factory.mktemp("logic") / "tiny"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    a = _commit(repo, {
        "dbt_project.yml": PROJECT, "macros/pudato_columns.sql": MACRO, "models/sources.yml": SOURCES,
        "models/tiny_stg_orders.sql": STAGING, "models/tiny_fct_totals.sql": MART.format(variant="a"),
        "pipelines/tiny.yml": PIPELINE,
    }, "A")
    git(repo, "checkout", "-q", "-b", "b")
    b = _commit(repo, {"models/tiny_fct_totals.sql": MART.format(variant="b")}, "B changes the mart")
    git(repo, "checkout", "-q", "-b", "broken", a)
    broken = _commit(repo, {"models/tiny_fct_totals.sql": "select no_such_column from {{ ref('tiny_stg_orders') }}\n"},
                     "a broken mart")
    sides = {}
    for side in ("left", "right"):
        git(repo, "checkout", "-q", "-b", side, a)
        sides[side] = _commit(repo, {f"models/tiny_{side}.sql": f"select '{side}' as side, "
                                     "{{ pudato_version_columns() }}\n"}, f"{side} model")
    git(repo, "checkout", "-q", "main")
    stack.client("s3").put_object(Bucket="pudato-test", Key="tiny/orders.csv", Body=ORDERS.encode())
    return {"url": str(repo), "path": repo, "A": a, "B": b, "broken": broken, **sides}


def _warehouse(stack) -> WarehouseBackend:
    return warehouse_backend(stack.settings())


def _rows(stack, sql: str) -> list[tuple]:
    with _warehouse(stack).connect(read_only=True) as con:
        return con.execute(sql).fetchall()


def _checksum(stack, table: str) -> str:
    """The table's content, order-free, without the per-job column."""
    with _warehouse(stack).connect(read_only=True) as con:
        columns = [row[0] for row in con.execute(f"describe {table}").fetchall() if row[0] != "_pudato_job_id"]
        listed = ", ".join(f'"{c}"' for c in columns)
        return con.execute(f"select md5(string_agg(row_text, '|' order by row_text)) from "
                           f"(select concat_ws(',', {listed}) as row_text from {table})").fetchone()[0]


def _transform_step(job: dict) -> dict:
    return next(s for s in job["steps"] if s["handler"] == "transform")


def test_each_commit_records_its_own_sha_and_version_column(stack, tiny):
    job_a = jobs.wait(pipelines.submit("tiny", tiny["url"], "main").job_id, timeout=180)
    assert job_a["status"] == "succeeded", _transform_step(job_a)["error"]
    assert job_a["logic_version"] == tiny["A"]
    assert {s["logic_version"] for s in job_a["steps"]} == {tiny["A"]}
    assert _rows(stack, "select distinct variant, _pudato_logic_version, _pudato_job_id from tiny_fct_totals") == [
        ("a", tiny["A"], job_a["id"])]

    job_b = jobs.wait(pipelines.submit("tiny", tiny["url"], "b").job_id, timeout=180)
    assert job_b["status"] == "succeeded"
    assert _transform_step(job_b)["logic_version"] == tiny["B"]
    assert _rows(stack, "select distinct variant, _pudato_logic_version from tiny_fct_totals") == [("b", tiny["B"])]


def test_two_shas_at_once_on_two_transform_workers(stack, tiny):
    second = devstack.start_worker(
        "transform", stack.env, log_dir=stack.state / "logs" / "transform2", name="transform2"
    )
    try:
        devstack.wait_for_worker(second, "transform2")
        submitted = {
            side: jobs.submit(jobs.step("transform", "build", select=[f"tiny_{side}"]), logic_repo=tiny["url"],
                              logic_ref=side, logic_version=tiny[side])
            for side in ("left", "right")
        }
        done = {side: jobs.wait(job.job_id, timeout=240) for side, job in submitted.items()}
    finally:
        devstack.stop(second)
    workers = set()
    for side, job in done.items():
        step = _transform_step(job)
        assert job["status"] == "succeeded", step["error"]
        assert step["logic_version"] == tiny[side]
        assert [o["name"] for o in step["outputs"]] == [f"main.tiny_{side}"]
        assert _rows(stack, f"select side, _pudato_logic_version from tiny_{side}") == [(side, tiny[side])]
        workers.add(step["worker"].split("@")[0])
    assert workers == {"transform", "transform2"}


def test_a_failing_model_fails_the_step_and_records_what_ran(stack, tiny):
    job = jobs.wait(pipelines.submit("tiny", tiny["url"], "broken").job_id, timeout=180)
    assert job["status"] == "failed"
    step = _transform_step(job)
    assert step["status"] == "failed"
    assert step["logic_version"] == tiny["broken"]
    assert "model.tiny.tiny_fct_totals" in step["error"]["message"]
    assert "no_such_column" in step["error"]["message"]
    nodes = {n["unique_id"]: n["status"] for n in step["data"]["nodes"]}
    assert nodes["model.tiny.tiny_stg_orders"] == "success"
    assert nodes["model.tiny.tiny_fct_totals"] == "error"
    assert [o["name"] for o in step["outputs"]] == ["main.tiny_stg_orders"]


def test_rerun_reproduces_the_tables_and_latest_runs_the_new_head(stack, tiny, tmp_path):
    repo = tmp_path / "moving"
    subprocess.run(["git", "clone", "-q", "-b", "main", tiny["url"], str(repo)], check=True)
    first = jobs.wait(pipelines.submit("tiny", str(repo), "main").job_id, timeout=180)
    assert first["status"] == "succeeded"
    before = _checksum(stack, "tiny_fct_totals")

    again = jobs.wait(pipelines.rerun(first["id"]).job_id, timeout=180)
    assert again["status"] == "succeeded"
    assert again["parent_job_id"] == first["id"]
    assert again["logic_version"] == first["logic_version"]
    assert _checksum(stack, "tiny_fct_totals") == before
    assert [s["payload"] for s in again["steps"]] == [s["payload"] for s in first["steps"]]

    head = _commit(repo, {"models/tiny_fct_totals.sql": MART.format(variant="later")}, "later")
    latest = jobs.wait(pipelines.rerun(first["id"], latest=True).job_id, timeout=180)
    assert latest["status"] == "succeeded"
    assert latest["logic_version"] == head != first["logic_version"]
    assert latest["parent_job_id"] == first["id"]
    assert _rows(stack, "select distinct variant, _pudato_logic_version from tiny_fct_totals") == [("later", head)]


@pytest.mark.parametrize(
    ("repo", "ref", "error", "message"),
    [
        (None, "no-such-branch", NotFound, "no-such-branch"),
        ("ext::sh -c touch% /tmp/pwned", "main", UnsafeInput, "transport"),
        ("--upload-pack=touch /tmp/pwned", "main", UnsafeInput, "must not start with '-'"),
        (None, "--output=/tmp/x", UnsafeInput, "-"),
    ],
    ids=["unknown-ref", "ext-transport", "option-as-url", "option-as-ref"],
)
def test_bad_repositories_and_refs_are_refused_before_anything_is_sent(stack, tiny, repo, ref, error, message):
    with pytest.raises(error, match=message):
        pipelines.submit("tiny", repo or tiny["url"], ref)


def test_bad_transform_input_fails_the_step_with_a_clear_error(stack, tiny, tmp_path):
    nothing = jobs.wait(jobs.submit(jobs.step("transform", "build", select=["no_model_is_called_this"]),
                                    logic_repo=tiny["url"], logic_ref="main", logic_version=tiny["A"]).job_id,
                        timeout=120)
    step = _transform_step(nothing)
    assert step["status"] == "failed"
    assert "matched no nodes" in step["error"]["message"]

    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q", "-b", "main")
    sha = _commit(plain, {"README.md": "notes, not a dbt project\n"}, "notes")
    not_dbt = jobs.wait(jobs.submit(jobs.step("transform", "build"), logic_repo=str(plain), logic_ref="main",
                                    logic_version=sha).job_id, timeout=120)
    assert "is not a dbt project" in _transform_step(not_dbt)["error"]["message"]
    assert jobs.wait(jobs.submit(jobs.step("transform", "ping")).job_id)["status"] == "succeeded"


@pytest.fixture(scope="module")
def sample(stack, tmp_path_factory):
    """The sample pipeline (ingest, then dbt on the sample logic repository), run once for the module."""
    repo = tmp_path_factory.mktemp("sample") / "sample"
    sha = make_logic_repo(repo)
    job = jobs.wait(pipelines.submit("la_revenue", str(repo), "main", before=[ingest_steps()]).job_id, timeout=300)
    return job, sha


def test_sample_pipeline_lineage_is_traceable_both_ways(stack, sample):
    job, sha = sample
    assert job["status"] == "succeeded", [s["error"] for s in job["steps"] if s["error"]]
    build = _transform_step(job)
    assert build["logic_version"] == sha
    built = {o["name"] for o in build["outputs"]}
    assert built == {"main.stg_gf_revenue_fy2017_18", "main.stg_gf_revenue_fy2021_22",
                     "main.int_gf_revenue_unioned", "main.fct_gf_revenue"}
    assert {i["name"] for i in build["inputs"]} == {"main.raw_gf_revenue_fy2017_18", "main.raw_gf_revenue_fy2021_22"}

    mart = _warehouse(stack).reference("main.fct_gf_revenue")
    upstream = lineage.trace(stack.registry, mart.namespace, mart.name, "upstream")
    names = {(e["source_name"], e["target_name"]) for e in upstream}
    csv_key = "la_budget/general_fund_revenue_fy2017-18.csv"
    assert ("main.stg_gf_revenue_fy2017_18", "main.int_gf_revenue_unioned") in names
    assert ("main.raw_gf_revenue_fy2017_18", "main.stg_gf_revenue_fy2017_18") in names
    assert (csv_key, "main.raw_gf_revenue_fy2017_18") in names
    assert all(e["logic_version"] == sha for e in upstream if e["job_id"] == job["id"])

    source = datasets.s3_object("pudato-test", csv_key)
    downstream = {e["target_name"] for e in lineage.trace(stack.registry, source.namespace, source.name, "downstream")}
    assert {"main.raw_gf_revenue_fy2017_18", "main.stg_gf_revenue_fy2017_18", "main.fct_gf_revenue"} <= downstream
    assert _rows(stack, "select count(*) from fct_gf_revenue")[0][0] == 10413
    _assert_the_second_release_drifted_and_rejected(job)


def _cli_lineage(*args: str) -> str:
    shown = subprocess.run([sys.executable, "-m", "pudato", "lineage", "main.fct_gf_revenue", *args],
                           capture_output=True, text=True, env=os.environ.copy(), cwd=REPO, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_the_lineage_cli_draws_the_sample_mart_in_mermaid_and_dot_to_a_depth(stack, sample):
    job, _ = sample
    assert job["status"] == "succeeded"
    mermaid = _cli_lineage("--format", "mermaid", "--depth", "1")
    assert mermaid.splitlines()[0] == "flowchart LR"
    assert "main.int_gf_revenue_unioned" in mermaid
    assert "main.stg_gf_revenue_fy2017_18" not in mermaid  # two hops away
    dot = _cli_lineage("--format", "dot", "--depth", "2")
    assert dot.splitlines()[0] == "digraph lineage {"
    assert "main.stg_gf_revenue_fy2017_18" in dot
    assert "main.raw_gf_revenue_fy2017_18" not in dot  # three hops away


def test_the_lineage_cli_as_of_the_job_names_the_release_of_the_raw_file(stack, sample):
    job, _ = sample
    assert job["status"] == "succeeded"
    document = json.loads(_cli_lineage("--format", "json", "--as-of", job["id"]))
    assert document["as_of"] == job["id"]
    assert document["direction"] == "upstream"
    csv_key = "la_budget/general_fund_revenue_fy2017-18.csv"
    (csv,) = [n for n in document["nodes"] if n["name"] == csv_key]
    read = [ref["facets"].get("version") for step in job["steps"] for ref in step["inputs"] or []
            if ref["name"] == csv_key]  # fmt: skip
    assert read[0]  # the bucket is versioned: the load recorded the version id it read
    assert csv["version"] == read[0]  # the S3 version the load read, not whatever is there now
    assert {e["depth"] for e in document["edges"]} >= {1, 4}


def _assert_the_second_release_drifted_and_rejected(job: dict) -> None:
    """The sample contract's aliases pair the renamed headers; its program code pattern rejects real rows."""
    first = next(s for s in job["steps"] if s["name"] == "release_fy2017_18")["data"]
    second = next(s for s in job["steps"] if s["name"] == "release_fy2021_22")["data"]
    renamed = {(r["from"], r["to"], r["by"]) for r in second["drift"]["renamed"]}
    assert renamed == {("Dept Name", "department_name", "alias"), ("Prog Code", "program_code", "alias"),
                       ("Prog Name", "program_name", "alias")}
    # 1,161 records, 8 with a program code such as 53BD; then 1,757 (and one blank record), 4 such.
    assert first["validation"]["counts"] == {"pattern": 8}
    assert second["validation"]["counts"] == {"pattern": 4}
    assert second["drift"]["rows"] == {"before": 1153, "release": 1757, "after": 1153 + 1753}
    assert second["validation"]["rejected_table"] == "main.gf_revenue_releases__rejected"
