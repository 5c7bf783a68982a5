"""The transform handler: real dbt, in-process, on real git commits and a tmp DuckDB warehouse."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers import commit as _commit
from helpers import git

from pudato import datasets
from pudato.backends.logic.git import GitLogicRepository
from pudato.backends.transform import DbtInvocation, DbtResult
from pudato.demo import load_releases, make_logic_repo
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command, Result
from pudato.settings import LogicSettings, Settings, TransformSettings, WarehouseSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PROJECT = REPO_ROOT / "dbt"

PROJECT = """\
name: tiny
version: "1.0.0"
config-version: 2
profile: analysts
models:
  tiny:
    +materialized: table
"""
# The analysts' own profile: Pudato must ignore it and use its own warehouse.
ANALYSTS_PROFILE = "analysts:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: {path}\n"
SOURCES = "version: 2\nsources:\n  - name: raw\n    schema: main\n    tables:\n      - name: raw_orders\n"
SCHEMA = """\
version: 2
models:
  - name: stg_orders
    columns:
      - name: id
        data_tests: [not_null, unique]
"""
VERSION_COLUMNS = "{{ pudato_version_columns() }}\n"
FROM_STAGING = "from {{ ref('stg_orders') }}\n"
STAGING = "select id, amount, " + VERSION_COLUMNS + "from {{ source('raw', 'raw_orders') }}\n"
MART_A = "select count(*) as n, sum(amount) as total, " + VERSION_COLUMNS + FROM_STAGING
MART_B = "select count(*) as n, sum(amount) as total, 'b' as variant, " + VERSION_COLUMNS + FROM_STAGING
MART_BROKEN = "select no_such_column, " + VERSION_COLUMNS + FROM_STAGING


def _new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "analyst@example.org")
    git(path, "config", "user.name", "Analyst")
    return path


@pytest.fixture(scope="module", params=["sandboxed", "inprocess"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same suite on each transform runner."""
    root = tmp_path_factory.mktemp(f"transform-{request.param}")
    repo = _new_repo(root / "logic")
    decoy = root / "analysts-warehouse.duckdb"
    base = {
        "dbt_project.yml": PROJECT,
        "profiles.yml": ANALYSTS_PROFILE.format(path=decoy),
        ".gitignore": "target/\nlogs/\ndbt_packages/\n",
        "macros/pudato_columns.sql": (SAMPLE_PROJECT / "macros" / "pudato_columns.sql").read_text(),
        "models/sources.yml": SOURCES,
        "models/schema.yml": SCHEMA,
        "models/stg_orders.sql": STAGING,
        "models/fct_totals.sql": MART_A,
    }
    a = _commit(repo, base, "A")
    b = _commit(repo, {"models/fct_totals.sql": MART_B}, "B")
    git(repo, "tag", "-a", "v-b", "-m", "B")
    git(repo, "checkout", "-q", "-b", "broken")
    broken = _commit(repo, {"models/fct_totals.sql": MART_BROKEN}, "broken mart")
    git(repo, "checkout", "-q", "-b", "with-package", b)
    helper = {
        "pkgs/helper/dbt_project.yml": "name: helper\nversion: '1.0.0'\nconfig-version: 2\n",
        "pkgs/helper/macros/double.sql": "{% macro double(x) %}({{ x }} * 2){% endmacro %}\n",
        "packages.yml": "packages:\n  - local: pkgs/helper\n",
        "models/fct_doubled.sql": "select {{ helper.double('total') }} as doubled, {{ pudato_version_columns() }}\n"
        "from {{ ref('fct_totals') }}\n",
    }
    with_package = _commit(repo, helper, "use a package")
    git(repo, "checkout", "-q", "main")
    not_dbt = _new_repo(root / "not-dbt")
    not_dbt_sha = _commit(not_dbt, {"README.md": "just notes\n"}, "notes")

    warehouse = root / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create table raw_orders as select range as id, range * 1.5 as amount from range(10)")
    settings = Settings(
        _env_file=None,
        warehouse=WarehouseSettings(path=warehouse),
        logic=LogicSettings(cache_dir=root / "cache"),
        transform=TransformSettings(runner=request.param),
    )
    return {
        "url": str(repo), "A": a, "B": b, "broken": broken, "with_package": with_package,
        "not_dbt": str(not_dbt), "not_dbt_sha": not_dbt_sha, "warehouse": warehouse, "decoy": decoy,
        "settings": settings, "handler": TransformHandler(settings),
    }  # fmt: skip


def _step(env: dict[str, Any], sha: str | None, action: str = "build", job: str = "job-1", **payload: Any) -> Result:
    command = Command(
        handler="transform", action=action, payload=payload, job_id=job,
        logic_repo=env["url"] if sha else None, logic_version=sha,
    )  # fmt: skip
    return env["handler"].execute(command)


def _query(warehouse: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def _ok(result: Result) -> Result:
    assert result.status == "succeeded", result.error
    return result


def test_each_commit_runs_as_itself(env: dict[str, Any]) -> None:
    first = _ok(_step(env, env["A"], job="job-a"))
    assert first.logic_version == env["A"]
    assert first.data["logic_version"] == env["A"]
    assert _query(env["warehouse"], "select n, _pudato_logic_version, _pudato_job_id from fct_totals") == [
        (10, env["A"], "job-a")
    ]
    second = _ok(_step(env, env["B"], job="job-b"))
    assert second.logic_version == env["B"]
    assert _query(env["warehouse"], "select variant, _pudato_logic_version from fct_totals") == [("b", env["B"])]
    assert _query(env["warehouse"], "select distinct _pudato_logic_version from stg_orders") == [(env["B"],)]
    # The analysts' profiles.yml was ignored: its warehouse was never created.
    assert not env["decoy"].exists()
    # dbt let go of the warehouse: another process can write to it.
    probe = f"import duckdb; duckdb.connect({str(env['warehouse'])!r}).execute('create table probe as select 1')"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_a_locked_warehouse_is_waited_for_then_transient(env: dict[str, Any]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(env['warehouse'])!r}); print('held', "
         "flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        settings = env["settings"].model_copy(
            update={"warehouse": WarehouseSettings(path=env["warehouse"], lock_timeout_s=0.5)}
        )
        started = time.monotonic()
        command = Command(handler="transform", action="build", logic_repo=env["url"], logic_version=env["A"])
        result = TransformHandler(settings).execute(command)
        assert time.monotonic() - started >= 0.5
    finally:
        holder.communicate("", timeout=30)
    assert result.error is not None
    assert result.error.type == "BackendUnavailable"
    assert result.error.kind == "transient"
    assert "locked by another process" in result.error.message
    _ok(_step(env, env["A"]))  # and once it is free, the same step succeeds


def test_vars_reach_models_when_the_manifest_is_reused(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _ok(_step(env, env["A"], job="warm-up"))
    calls: list[tuple[str, bool]] = []
    runner = env["handler"].runner
    real_invoke = runner.invoke

    def counting(invocation: DbtInvocation) -> DbtResult:
        result = real_invoke(invocation)
        calls.append((invocation.command, result.parsed))
        return result

    monkeypatch.setattr(runner, "invoke", counting)
    for job in ("job-1", "job-2"):
        _ok(_step(env, env["A"], job=job))
        assert _query(env["warehouse"], "select _pudato_job_id from fct_totals") == [(job,)]
        assert _query(env["warehouse"], "select distinct _pudato_job_id from stg_orders") == [(job,)]
    assert calls == [("build", False), ("build", False)]  # no second parse: the manifest was reused


def test_payload_vars_cannot_override_the_version_columns(env: dict[str, Any]) -> None:
    result = _ok(_step(env, env["A"], job="job-real", vars={"pudato_job_id": "forged", "pudato_logic_version": "x"}))
    assert result.data["dbt_command"][result.data["dbt_command"].index("--vars") + 1].count("forged") == 0
    assert _query(env["warehouse"], "select _pudato_logic_version, _pudato_job_id from fct_totals") == [
        (env["A"], "job-real")
    ]


def test_lineage_names_models_and_sources_as_datasets(env: dict[str, Any]) -> None:
    result = _ok(_step(env, env["A"]))
    stem = env["warehouse"].stem
    source = datasets.duckdb_table(stem, "main.raw_orders")
    staging = datasets.duckdb_table(stem, "main.stg_orders")
    mart = datasets.duckdb_table(stem, "main.fct_totals")
    assert [(o.namespace, o.name) for o in result.outputs] == [
        (staging.namespace, staging.name),
        (mart.namespace, mart.name),
    ]
    # stg_orders was built by this run, so only the source is an input of the step.
    assert [(i.namespace, i.name) for i in result.inputs] == [(source.namespace, source.name)]
    nodes = {n["unique_id"]: n for n in result.data["nodes"]}
    assert nodes["model.tiny.stg_orders"]["depends_on"] == ["main.raw_orders"]
    assert nodes["model.tiny.fct_totals"]["depends_on"] == ["main.stg_orders"]
    assert nodes["model.tiny.fct_totals"]["relation"] == "main.fct_totals"
    facets = result.outputs[1].facets
    assert facets["unique_id"] == "model.tiny.fct_totals"
    assert facets["resource_type"] == "model"
    assert facets["status"] == "success"
    assert facets["execution_time"] > 0
    assert "rows_affected" in facets
    assert env["A"] in nodes["model.tiny.fct_totals"]["compiled_code"]
    assert facets["derived_from"] == [{"namespace": staging.namespace, "name": staging.name}]
    assert result.outputs[0].facets["derived_from"] == [{"namespace": source.namespace, "name": source.name}]
    assert [e.type for e in result.events] == ["transform.built", "transform.built"]
    assert [e.dataset.name for e in result.events if e.dataset] == ["main.stg_orders", "main.fct_totals"]
    assert result.executions[0].engine == "dbt"
    assert result.executions[0].statement == "dbt build"
    assert {e.engine for e in result.executions[1:]} == {"duckdb"}
    assert len(result.executions) == 1 + len(nodes)
    tests = {t["unique_id"].split(".")[2]: t for t in result.data["tests"]}
    assert set(tests) == {"not_null_stg_orders_id", "unique_stg_orders_id"}
    assert all(t["status"] == "pass" and t["failures"] == 0 for t in tests.values())
    assert tests["not_null_stg_orders_id"]["attached_node"] == "model.tiny.stg_orders"
    assert tests["not_null_stg_orders_id"]["models"] == ["model.tiny.stg_orders"]
    assert result.data["dbt_command"][:2] == ["dbt", "build"]
    assert result.data["package_lock_sha256"] is None

    # Built alone, the mart reads the staging model, which is then an input.
    alone = _ok(_step(env, env["A"], action="run", select=["fct_totals"]))
    assert [o.name for o in alone.outputs] == ["main.fct_totals"]
    assert [(i.namespace, i.name) for i in alone.inputs] == [(staging.namespace, staging.name)]
    assert alone.executions[0].statement == "dbt run --select fct_totals"


def test_test_and_compile_build_nothing(env: dict[str, Any]) -> None:
    _ok(_step(env, env["A"]))
    tested = _ok(_step(env, env["A"], action="test"))
    assert tested.outputs == []
    assert [i.name for i in tested.inputs] == ["main.stg_orders"]
    assert {t["status"] for t in tested.data["tests"]} == {"pass"}
    compiled = _ok(_step(env, env["A"], action="compile", select=["stg_orders"]))
    assert compiled.outputs == []
    assert compiled.inputs == []
    assert env["A"] in compiled.data["nodes"][0]["compiled_code"]


def test_bad_sql_fails_the_step_and_keeps_what_ran(env: dict[str, Any]) -> None:
    result = _step(env, env["broken"], job="job-broken")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "TransformFailed"
    assert result.error.kind == "terminal"
    assert "model.tiny.fct_totals" in result.error.message
    assert "no_such_column" in result.error.message  # DuckDB's own words, through dbt
    assert result.error.details["failing"] == ["model.tiny.fct_totals"]
    assert result.logic_version == env["broken"]
    statuses = {n["unique_id"]: n["status"] for n in result.data["nodes"]}
    assert statuses["model.tiny.stg_orders"] == "success"
    assert statuses["model.tiny.fct_totals"] == "error"
    assert [o.name for o in result.outputs] == ["main.stg_orders"]
    assert _query(env["warehouse"], "select distinct _pudato_job_id from stg_orders") == [("job-broken",)]


def test_payload_ref_is_resolved_when_the_command_has_no_pin(env: dict[str, Any]) -> None:
    result = _ok(_step(env, None, repo=env["url"], ref="v-b"))
    assert result.logic_version == env["B"]
    result = _ok(_step(env, None, repo=env["url"], ref="main", select=["stg_orders"]))
    assert result.logic_version == env["B"]


def test_packages_are_installed_and_the_lock_recorded(env: dict[str, Any]) -> None:
    result = _ok(_step(env, env["with_package"], select=["fct_doubled"]))
    assert len(result.data["package_lock_sha256"]) == 64
    assert _query(env["warehouse"], "select doubled from fct_doubled") == [(135,)]
    # The checkout still verifies: dbt's leftovers (dbt_packages/, package-lock.yml) are tolerated.
    checkout = GitLogicRepository(env["settings"].logic.cache_dir).checkout(env["url"], env["with_package"])
    assert (checkout.path / "dbt_packages").is_dir()


@pytest.mark.parametrize(
    ("payload", "sha_key", "error_type", "pattern"),
    [
        ({"select": ["--vars"]}, "A", "UnsafeInput", "selector '--vars'"),
        ({"select": ["a b"]}, "A", "UnsafeInput", "selector 'a b'"),
        ({"exclude": ["x;rm -rf /"]}, "A", "UnsafeInput", "selector"),
        ({"target": "prod --debug"}, "A", "UnsafeInput", "target"),
        ({"select": ["no_such_model"]}, "A", "InvalidCommand", "matched no nodes"),
        ({"repo": "ext::sh -c touch% /tmp/pwned", "ref": "main"}, None, "UnsafeInput", "transport"),
        ({"repo": "-oProxyCommand=x", "ref": "main"}, None, "UnsafeInput", "must not start with '-'"),
        ({"repo": "{url}", "ref": "--upload-pack=touch /tmp/pwned"}, None, "UnsafeInput", "starts with '-'"),
        ({"repo": "{url}", "ref": "no-such-branch"}, None, "NotFound", "ref 'no-such-branch' not found in"),
        ({}, None, "InvalidCommand", "needs a logic repository"),
        ({"repo": "{url}"}, None, "InvalidCommand", "no ref"),
    ],
)
def test_bad_requests_are_refused_clearly(
    env: dict[str, Any], payload: dict[str, Any], sha_key: str | None, error_type: str, pattern: str
) -> None:
    payload = {k: v.format(url=env["url"]) if isinstance(v, str) else v for k, v in payload.items()}
    result = _step(env, env[sha_key] if sha_key else None, **payload)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == error_type, result.error
    assert re.search(pattern, result.error.message), result.error.message
    assert not Path("/tmp/pwned").exists()


def test_logic_version_must_be_a_full_sha(env: dict[str, Any]) -> None:
    result = _step(env, "main")
    assert result.error is not None
    assert result.error.type == "InvalidCommand"
    assert "full 40-hex" in result.error.message


def test_a_repository_without_dbt_project_is_refused(env: dict[str, Any]) -> None:
    command = Command(handler="transform", action="build", logic_repo=env["not_dbt"], logic_version=env["not_dbt_sha"])
    result = env["handler"].execute(command)
    assert result.error is not None
    assert result.error.type == "InvalidCommand"
    assert "not a dbt project" in result.error.message
    assert env["not_dbt_sha"] in result.error.message


# -- the real sample project ----------------------------------------------------------


def test_sample_project_builds_and_passes_its_tests(tmp_path: Path) -> None:
    repo = tmp_path / "la-logic"
    sha = make_logic_repo(repo, SAMPLE_PROJECT)
    warehouse = tmp_path / "la.duckdb"
    load_releases(warehouse)
    settings = Settings(_env_file=None, warehouse=WarehouseSettings(path=warehouse),
                        logic=LogicSettings(cache_dir=tmp_path / "cache"))  # fmt: skip
    command = Command(handler="transform", action="build", job_id="la-1", logic_repo=str(repo), logic_version=sha)
    result = _ok(TransformHandler(settings).execute(command))
    assert _query(warehouse, "select count(*) from fct_gf_revenue") == [(10_413,)]
    versions = _query(warehouse, "select distinct _pudato_logic_version, _pudato_job_id from fct_gf_revenue")
    assert versions == [(sha, "la-1")]
    assert result.data["tests"]
    assert {t["status"] for t in result.data["tests"]} == {"pass"}
    assert {o.name for o in result.outputs} >= {"main.fct_gf_revenue", "main.int_gf_revenue_unioned"}
    assert sorted(i.name for i in result.inputs) == ["main.raw_gf_revenue_fy2017_18", "main.raw_gf_revenue_fy2021_22"]
    assert all(i.namespace == f"duckdb://{warehouse.stem}" for i in result.inputs)


def test_a_selector_that_matches_nothing_keeps_its_logic_version(env: dict[str, Any]) -> None:
    result = _step(env, env["A"], select=["no_such_model"])
    assert result.status == "failed"
    assert result.logic_version == env["A"]


def test_seed_files_are_named_in_the_logic_repository(tmp_path: Path) -> None:
    repo = _new_repo(tmp_path / "seeded")
    files = {
        "dbt_project.yml": PROJECT.replace("tiny", "seeded"),
        "seeds/codes.csv": "code,label\n1,a\n",
        "models/lonely.sql": "select 1 as one\n",
    }
    first = _commit(repo, files, "seed")
    second = _commit(repo, {"README.md": "new commit, same seed\n"}, "docs")
    warehouse = tmp_path / "seeded.duckdb"
    settings = Settings(_env_file=None, warehouse=WarehouseSettings(path=warehouse),
                        logic=LogicSettings(cache_dir=tmp_path / "cache"))  # fmt: skip
    handler = TransformHandler(settings)
    seen = []
    for sha in (first, second):
        result = _ok(handler.execute(Command(handler="transform", action="build", job_id="j",
                                             logic_repo=str(repo), logic_version=sha)))  # fmt: skip
        [seed] = [i for i in result.inputs if i.name == "seeds/codes.csv"]
        seen.append(seed)
        lonely = [o for o in result.outputs if o.name == "main.lonely"]
        assert lonely
        assert lonely[0].facets["derived_from"] == []
    assert seen[0].namespace == seen[1].namespace == f"file://{repo.resolve()}"
    assert [s.facets["version"] for s in seen] == [first, second]
    assert seen[0].facets["sha256"] == seen[1].facets["sha256"]
