"""A hostile logic repository through SQS and the real transform worker, on the lake (moto + PostgreSQL).

The worker's environment holds the platform's secrets (the AWS keys, the registry
URL). The sandboxed dbt process must not: ``env_var()`` of them falls back to its
default, a Python model is refused before it runs, and ``/etc/passwd`` cannot be
read into the lake, and an ``on-run-start`` hook is refused. Nothing the worker
records, logs or sends on SNS carries the catalog password, a canary the stack
sets (the sandbox holds it as a DuckDB secret).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import commit, drain, subscribed_queue
from helpers import git as _git

from pudato import jobs
from pudato.backends.warehouse import warehouse_backend

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROJECT = "name: hostile\nversion: '1.0.0'\nconfig-version: 2\nprofile: hostile\n"
LEAK = ("select '{{ env_var('PUDATO_AWS__SECRET_ACCESS_KEY', 'absent') }}' as aws_secret, "
        "'{{ env_var('PUDATO_REGISTRY__URL', 'absent') }}' as registry_url, "
        "'{{ env_var('PUDATO_WAREHOUSE__CATALOG_PASSWORD', 'absent') }}' as catalog_password\n")  # fmt: skip
RUN_PROGRAM = (
    "import subprocess\n\n\ndef model(dbt, session):\n"
    "    subprocess.run(['touch', '{marker}'])\n    return session.sql('select 1 as x')\n"
)
PASSWD = "select * from read_csv('/etc/passwd', delim=':', header=false)\n"
HOOK = PROJECT + "on-run-start:\n  - \"copy (select 1 as x) to '{marker}'\"\n"


def _branch(repo: Path, name: str, files: dict[str, str]) -> str:
    _git(repo, "checkout", "-q", "-b", name, "main")
    return commit(repo, files, name)


@pytest.fixture(scope="module")
def hostile(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-logic")
    repo = root / "repo"
    commit(repo, {"dbt_project.yml": PROJECT}, "empty project")
    marker = root / "pwned"
    return {
        "url": str(repo), "marker": marker,
        "leak": _branch(repo, "leak", {"models/hostile_leak.sql": LEAK}),
        "python": _branch(repo, "python", {"models/hostile_program.py": RUN_PROGRAM.format(marker=marker)}),
        "passwd": _branch(repo, "passwd", {"models/hostile_passwd.sql": PASSWD}),
        "hook": _branch(repo, "hook", {"dbt_project.yml": HOOK.format(marker=marker), "models/hooked.sql": "select 1"}),
    }  # fmt: skip


def _build(hostile, case):
    submitted = jobs.submit(jobs.step("transform", "build"), logic_repo=hostile["url"], logic_ref=case,
                            logic_version=hostile[case])  # fmt: skip
    job = jobs.wait(submitted.job_id, timeout=240)
    return job, job["steps"][0]


def _tables(stack) -> set[str]:
    with warehouse_backend(stack.settings()).connect(read_only=True) as con:
        rows = con.execute("select table_name from duckdb_tables() where database_name = 'lake'").fetchall()
    return {row[0] for row in rows}


def test_env_var_cannot_reach_the_workers_secrets(stack, hostile):
    secret = stack.env["PUDATO_AWS__SECRET_ACCESS_KEY"]
    job, step = _build(hostile, "leak")
    assert job["status"] == "succeeded", step["error"]
    with warehouse_backend(stack.settings()).connect(read_only=True) as con:
        leaked = con.execute("select aws_secret, registry_url, catalog_password from hostile_leak").fetchall()
    assert leaked == [("absent", "absent", "absent")]
    recorded = json.dumps(job, default=str)
    assert secret not in recorded
    assert stack.env["PUDATO_REGISTRY__URL"] not in recorded


def test_the_sandboxed_dbt_process_holds_no_platform_variable(stack, hostile):
    _build(hostile, "leak")  # the worker's sandbox is warm
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"pudato.backends.transform.child" in cmdline:
                found.append((proc / "environ").read_bytes().decode(errors="replace").split("\0"))
        except OSError:
            continue
    assert found  # at least the transform worker's own sandbox
    for environ in found:
        names = {entry.split("=", 1)[0] for entry in environ if entry}
        assert not {name for name in names if name.startswith(("PUDATO_", "AWS_"))}
        assert stack.env["PUDATO_REGISTRY__URL"] not in "\n".join(environ)


def test_a_python_model_is_refused_once_and_never_runs(stack, hostile):
    job, step = _build(hostile, "python")
    assert job["status"] == "failed"
    assert step["error"]["type"] == "TransformRefused"
    assert step["error"]["kind"] == "terminal"
    assert "PUDATO_TRANSFORM__ALLOW_PYTHON_MODELS" in step["error"]["message"]
    assert not hostile["marker"].exists()
    assert "hostile_program" not in _tables(stack)


def test_etc_passwd_never_reaches_the_lake(stack, hostile):
    job, step = _build(hostile, "passwd")
    assert job["status"] == "failed"
    assert "disabled by configuration" in step["error"]["message"]
    assert "root:x:0:0" not in json.dumps(job, default=str)
    assert "hostile_passwd" not in _tables(stack)


def test_an_on_run_start_hook_is_refused_and_never_runs(stack, hostile):
    job, step = _build(hostile, "hook")
    assert job["status"] == "failed"
    assert step["error"]["type"] == "TransformRefused"
    assert step["error"]["kind"] == "terminal"
    assert "PUDATO_TRANSFORM__ALLOW_HOOKS" in step["error"]["message"]
    assert "operation.hostile.hostile-on-run-start-0" in step["error"]["message"]
    assert not hostile["marker"].exists()
    assert "hooked" not in _tables(stack)






def test_the_canary_secret_is_in_no_log_and_no_sns_message(stack, hostile):
    canary = stack.env["PUDATO_WAREHOUSE__CATALOG_PASSWORD"]
    assert canary != "testing"
    queues = [subscribed_queue(stack, topic, f"test-canary-{topic}") for topic in ("pudato-results", "pudato-events")]
    steps = [_build(hostile, case)[1] for case in ("leak", "python", "passwd", "hook")]
    job_ids = [step["job_id"] for step in steps]
    bodies = [body for url in queues for body in drain(stack, url)]
    for job_id in job_ids:  # every job's Result and events were read, so the search below means something
        assert any(job_id in body for body in bodies), job_id
    assert not [body for body in bodies if canary in body]
    log = stack.worker_log("transform")
    assert all(step["id"] in log for step in steps)  # each step's task, by its id
    assert canary not in log


def _psql(stack, database: str, *statements: str) -> None:
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", port=stack.postgres["port"], user="postgres", dbname=database)
    con.autocommit = True
    with con.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    con.close()


def test_dbt_reaches_the_catalog_as_the_builds_own_role(stack, hostile):
    from pudato.handlers.transform import TransformHandler
    from pudato.protocol import Command
    from pudato.settings import TransformSettings

    _psql(stack, "postgres", "drop role if exists lake_builder", "create role lake_builder login")
    settings = stack.settings().model_copy(update={"transform": TransformSettings(catalog_user="lake_builder")})
    handler = TransformHandler(settings)
    command = Command(handler="transform", action="build", logic_repo=hostile["url"], logic_version=hostile["leak"])
    try:
        refused = handler.execute(command)
        assert refused.status == "failed"
        assert "permission denied" in refused.error.message
        _psql(stack, "pudato_lake", "grant usage, create on schema public to lake_builder",
              "grant all on all tables in schema public to lake_builder")  # fmt: skip
        built = handler.execute(command)
        assert built.status == "succeeded", built.error
    finally:
        handler.runner.close()
