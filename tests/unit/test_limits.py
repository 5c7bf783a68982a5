"""Runaway steps are bounded: time limits below the visibility timeout, DuckDB interrupted at the
step's deadline, each instance's memory and threads capped, and inline results capped in size."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest

from pudato import deadline
from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.errors import ConfigurationError, LimitExceeded
from pudato.handlers.query import QueryHandler
from pudato.protocol import Command
from pudato.settings import Settings

RUNAWAY = "select sum(i * i % 7) from range(100000000000) t(i)"


def test_time_limits_stay_below_each_queues_visibility_timeout():
    for handler, queue in Settings(_env_file=None).broker.queues.items():
        assert queue.soft_time_limit_s < queue.time_limit_s < queue.visibility_timeout_s, handler


def test_a_hard_limit_at_or_above_the_visibility_timeout_is_refused():
    settings = Settings(_env_file=None, broker={"queues": {"query": {"visibility_timeout_s": 60, "time_limit_s": 60}}})
    with pytest.raises(ConfigurationError, match="must stay below its visibility timeout"):
        settings.broker.queues["query"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, storage={"backend": "local", "local_root": tmp_path / "objects"},
                    warehouse={"path": tmp_path / "warehouse.duckdb", "threads": 1, "memory_limit": "256MB",
                               "max_result_bytes": 2000})


@pytest.fixture
def warehouse(settings: Settings) -> DuckDBWarehouse:
    return DuckDBWarehouse.from_settings(settings)


def test_each_instance_has_the_configured_memory_and_threads(warehouse):
    con = warehouse.instance()
    try:
        threads, memory = con.execute("select current_setting('threads'), current_setting('memory_limit')").fetchone()
    finally:
        con.close()
    assert threads == 1
    assert memory.startswith("244") or "256" in memory  # DuckDB shows 256MB as 244.1 MiB


def test_a_statement_past_the_steps_deadline_is_interrupted(warehouse):
    started = time.monotonic()
    expected = r"time limit of 0.5 s and was interrupted \(set by PUDATO_TEST_LIMIT\)"
    with deadline.step_deadline(0.5, "PUDATO_TEST_LIMIT"), warehouse.session() as session, \
            pytest.raises(LimitExceeded, match=expected):
        session.execute(RUNAWAY)
    assert time.monotonic() - started < 30


def test_a_result_over_the_size_cap_fails_with_the_way_out(settings, warehouse):
    query = QueryHandler(settings, LocalStorage(settings.storage.local_root), warehouse)
    result = query.execute(Command(handler="query", action="run",
                                   payload={"sql": "select repeat('x', 100) as wide from range(100)"}))
    assert result.status == "failed"
    assert result.error.type == "LimitExceeded"
    assert "PUDATO_WAREHOUSE__MAX_RESULT_BYTES" in result.error.message


def test_spilling_past_the_temp_disk_limit_fails_naming_the_setting(tmp_path):
    settings = Settings(_env_file=None, warehouse={"path": tmp_path / "warehouse.duckdb", "threads": 1,
                                                   "memory_limit": "16MB", "temp_directory": tmp_path / "spill",
                                                   "max_temp_directory_size": "1MB"})  # fmt: skip
    con = DuckDBWarehouse.from_settings(settings).instance()
    try:
        (limit,) = con.execute("select current_setting('max_temp_directory_size')").fetchone()
        assert limit == "976.5 KiB"  # 1MB
        # About 100 MB of incompressible rows in an in-memory table: they must spill, and may spill only 1MB.
        with pytest.raises(duckdb.OutOfMemoryException, match="max_temp_directory_size"):
            con.execute("create table spilled as select md5(i::varchar) as s from range(3000000) t(i)")
        (spilled,) = con.execute("select coalesce(sum(size), 0) from duckdb_temporary_files()").fetchone()
        assert spilled <= 1_000_000
    finally:
        con.close()
