"""Fixtures for the unit tests that load files into a local DuckDB warehouse through the table handler.

A test file gives its own ``storage`` fixture (which files it puts where); a file with
other needs defines its own ``settings``, which takes precedence over this one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.handlers.table import TableHandler
from pudato.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        storage={"backend": "local", "local_root": tmp_path / "objects"},
        warehouse={"path": tmp_path / "db" / "warehouse.duckdb", "lock_timeout_s": 5},
    )


@pytest.fixture
def warehouse(settings: Settings) -> DuckDBWarehouse:
    return DuckDBWarehouse.from_settings(settings)


@pytest.fixture
def tables(settings: Settings, storage: LocalStorage, warehouse: DuckDBWarehouse) -> TableHandler:
    return TableHandler(settings, storage, warehouse)
