"""dbt's DuckDB (sandboxed or in-process) gets the warehouse's limits: memory, threads and a temp-disk cap that holds.

Real dbt in the real sandboxed child on a tmp DuckDB file; a model records the
settings it ran under, another sorts ~100 MB under a 16 MB memory limit and may
spill only 1 MB.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from helpers import commit

from pudato.backends.transform.inprocess import InProcessRunner
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command, Result
from pudato.settings import LogicSettings, Settings, WarehouseSettings

PROJECT = "name: limits\nversion: '1.0.0'\nconfig-version: 2\nprofile: limits\n"
SETTINGS_MODEL = (  # a table, not a view: the values dbt's instance had, not the reader's
    "{{ config(materialized='table') }}\n"
    "select current_setting('memory_limit') as memory_limit, current_setting('threads') as threads, "
    "current_setting('max_temp_directory_size') as max_temp\n"
)
SPILL_MODEL = (
    "{{ config(materialized='table') }}\n"
    "select s from (select md5(i::varchar) as s from range(3000000) t(i)) order by s\n"
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("limits") / "repo"
    settings_sha = commit(root, {"dbt_project.yml": PROJECT, "models/limits_seen.sql": SETTINGS_MODEL}, "settings")
    spill_sha = commit(root, {"models/limits_spill.sql": SPILL_MODEL}, "spill")
    return {"url": str(root), "settings": settings_sha, "spill": spill_sha}


@pytest.fixture(scope="module", params=["sandboxed", "inprocess"])
def handler(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Any:
    root = tmp_path_factory.mktemp(f"limits-{request.param}")
    warehouse = WarehouseSettings(path=root / "warehouse.duckdb", memory_limit="16MB", threads=1,
                                  max_temp_directory_size="1MB")  # fmt: skip
    settings = Settings(_env_file=None, warehouse=warehouse, logic=LogicSettings(cache_dir=root / "cache"))
    runner = SandboxedRunner.from_settings(settings) if request.param == "sandboxed" else InProcessRunner()
    handler = TransformHandler(settings, runner=runner)
    yield handler
    handler.runner.close()


def _build(handler: TransformHandler, repo: dict[str, str], case: str) -> Result:
    command = Command(handler="transform", action="build", job_id=f"job-limits-{case}", logic_repo=repo["url"],
                      logic_version=repo[case])  # fmt: skip
    return handler.execute(command)


def test_dbt_runs_under_the_warehouses_memory_threads_and_temp_limits(handler: TransformHandler, repo: Any) -> None:
    result = _build(handler, repo, "settings")
    assert result.status == "succeeded", result.error
    with duckdb.connect(str(handler.warehouse.location), read_only=True) as con:  # type: ignore[attr-defined]
        (seen,) = con.execute("select memory_limit, threads, max_temp from limits_seen").fetchall()
    assert seen == ("15.2 MiB", 1, "976.5 KiB")  # 16MB, 1 thread, 1MB


def test_a_model_spilling_past_the_temp_limit_fails_naming_the_setting(handler: TransformHandler, repo: Any) -> None:
    result = _build(handler, repo, "spill")
    assert result.status == "failed"
    assert result.error is not None
    assert "model.limits.limits_spill" in result.error.message
    assert "max_temp_directory_size" in result.error.message
