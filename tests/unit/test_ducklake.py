"""The DuckLake warehouse on a SQLite catalog and local data files: versions, snapshots, conflicts.

No service is needed: the catalog is a SQLite file and the data a folder, the
shape ``make demo`` uses (the integration tests run the same code on PostgreSQL and S3).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pudato import datasets
from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse import parse_table_name, warehouse_backend
from pudato.backends.warehouse.ducklake import DuckLakeWarehouse, ensure_catalog
from pudato.backends.warehouse.lake_catalog import Catalog, catalog_from_settings
from pudato.errors import SnapshotGone
from pudato.handlers.query import QueryHandler
from pudato.handlers.table import TableHandler
from pudato.protocol import Command
from pudato.settings import AWSSettings, Settings


def lake_settings(root: Path) -> Settings:
    return Settings(
        _env_file=None,
        storage={"backend": "local", "local_root": root / "objects"},
        registry={"url": f"sqlite:///{root}/registry.db"},
        warehouse={"backend": "ducklake", "extension_dir": root / "ext", "lock_timeout_s": 60},
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = lake_settings(tmp_path)
    ensure_catalog(settings)
    return settings


def _run(handler: Any, action: str, **payload: Any) -> Any:
    result = handler.execute(Command(handler=handler.name, action=action, payload=payload))
    assert result.error is None, result.error
    return result


def test_defaults_put_the_catalog_beside_the_registry_and_data_beside_storage(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path)
    lake = warehouse_backend(settings)
    assert isinstance(lake, DuckLakeWarehouse)
    assert lake.catalog.path == (tmp_path / "lake.sqlite").resolve()
    assert lake.data_path == str((tmp_path / "lake").resolve()) + "/"
    assert lake.namespace == "ducklake://lake"
    assert lake.reference("t").name == "main.t"
    postgres = settings.model_copy(update={"registry": settings.registry.model_copy(
        update={"url": "postgresql+psycopg2://reg:s3cret@db.example:5433/pudato"})})  # fmt: skip
    catalog = catalog_from_settings(postgres)
    assert (catalog.kind, catalog.database, catalog.host, catalog.port) == (
        "postgres",
        "pudato_lake",
        "db.example",
        5433,
    )
    assert "s3cret" not in catalog.describe()
    assert "password=s3cret" in catalog.attach_path()


def test_every_write_is_a_version_and_old_versions_stay_readable(settings: Settings, tmp_path: Path) -> None:
    storage = LocalStorage(settings.storage.local_root)
    storage.put_bytes("a.csv", b"id,name\n1,a\n2,b\n")
    lake = warehouse_backend(settings)
    tables = TableHandler(settings, storage, lake)
    loaded = _run(tables, "load", table="people", key="a.csv").outputs[0]
    assert loaded.namespace == lake.namespace
    assert loaded.facets["rows"] == 2
    first = loaded.facets["snapshot_id"]
    assert len(loaded.facets["schema_fingerprint"]) == 64

    appended = _run(tables, "insert", table="people", rows=[{"id": 3, "name": "c"}]).outputs[0]
    assert appended.facets["rows"] == 3
    assert appended.facets["snapshot_id"] > first
    assert appended.facets["schema_fingerprint"] == loaded.facets["schema_fingerprint"]

    assert lake.current_snapshot() == appended.facets["snapshot_id"]
    then = lake.table_version("people", first)
    assert (then.snapshot_id, then.rows) == (first, 2)
    with lake.session_at(first) as session:
        assert session.rows("SELECT count(*) FROM people")[0][0] == 2
        assert session.current_snapshot() == first
    with lake.session_at(first, tables=["main.people"]) as session:
        assert session.rows("SELECT count(*) FROM main.people")[0][0] == 2
    assert lake.table_version("people").rows == 3


def test_a_query_records_the_version_it_read(settings: Settings) -> None:
    storage = LocalStorage(settings.storage.local_root)
    storage.put_bytes("a.csv", b"id\n1\n2\n")
    lake = warehouse_backend(settings)
    _run(TableHandler(settings, storage, lake), "load", table="t", key="a.csv")
    result = _run(QueryHandler(settings, storage, lake), "run", sql="select sum(id) as s from t")
    assert result.data["rows"] == [[3]]
    (read,) = result.inputs
    assert read.same_dataset(datasets.lake_table("lake", "main.t"))
    assert read.facets["snapshot_id"] == lake.current_snapshot()
    assert read.facets["rows"] == 2


def test_a_gone_snapshot_names_the_dataset_and_the_version(settings: Settings) -> None:
    lake = warehouse_backend(settings)
    with lake.session() as session:
        session.atomic(lambda s: s.write("CREATE TABLE t AS SELECT 1 AS a"))
    created = lake.current_snapshot()
    assert created is not None
    with pytest.raises(SnapshotGone) as before_it_existed:
        lake.table_version("t", created - 1)
    assert before_it_existed.value.dataset == "main.t"
    assert before_it_existed.value.snapshot == created - 1
    with pytest.raises(SnapshotGone, match="999"), lake.session_at(999):
        pass
    with pytest.raises(SnapshotGone, match=r"main\.t"), lake.session_at(999, tables=["t"]):
        pass


def _append_many(root: str, worker: int) -> None:
    settings = lake_settings(Path(root))
    lake = warehouse_backend(settings)
    types = {"worker": "INTEGER", "batch": "INTEGER", "n": "INTEGER"}
    for batch in range(3):
        with lake.session() as session:
            rows = [{"worker": worker, "batch": batch, "n": n} for n in range(50)]
            session.atomic(lambda s, rows=rows: s.insert_rows('"shared"', types, rows))
            # A replace of another table in the same transaction makes writers conflict for real.
            session.atomic(lambda s: s.replace_with(parse_table_name("churn"), "SELECT 1 AS x"))


def test_conflicting_writers_are_retried_and_lose_no_row(settings: Settings, tmp_path: Path) -> None:
    lake = warehouse_backend(settings)
    with lake.session() as session:
        session.atomic(lambda s: s.write('CREATE TABLE "shared" (worker INTEGER, batch INTEGER, n INTEGER)'))
        session.atomic(lambda s: s.write('CREATE TABLE "churn" AS SELECT 0 AS x'))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(180)
    assert [p.exitcode for p in workers] == [0, 0]
    assert lake.table_version("shared").rows == 2 * 3 * 50


def test_queries_share_one_sandboxed_instance_that_sees_new_commits_and_no_files(settings: Settings) -> None:
    storage = LocalStorage(settings.storage.local_root)
    storage.put_bytes("a.csv", b"id\n1\n")
    lake = warehouse_backend(settings)
    tables, queries = TableHandler(settings, storage, lake), QueryHandler(settings, storage, lake)
    _run(tables, "load", table="first", key="a.csv")
    assert _run(queries, "run", sql="select count(*) from first").data["rows"] == [[1]]
    for attempt in range(2):  # the shared instance stays sandboxed, query after query
        refused = queries.execute(
            Command(
                handler="query",
                action="run",
                payload={"sql": f"select * from read_csv('{settings.storage.local_root}/a.csv')"},
            )
        )
        assert refused.error is not None
        assert refused.error.type == "UnsafeInput", (attempt, refused.error)
    _run(tables, "load", table="second", key="a.csv")  # committed after the instance was opened
    assert _run(queries, "run", sql="select count(*) from second").data["rows"] == [[1]]


def test_dbt_gets_the_builds_credentials_only_as_secrets(tmp_path: Path) -> None:
    aws = AWSSettings(access_key_id="platform-key", secret_access_key=SecretStr("platform-secret"))
    catalog = Catalog("postgres", "pudato_lake", "db.example", 5433, "reg", "s3cret")
    lake = DuckLakeWarehouse(catalog, "s3://b/lake/", extension_dir=tmp_path / "ext", aws=aws)
    build = lake.for_build("lake_builder", "builder-pw", "build-key", "build-secret")
    target = build.dbt_target()
    attach = target["attach"][0]["path"]
    assert "user=lake_builder" in attach
    assert "password" not in attach
    assert "s3cret" not in str(target)
    assert "platform-key" not in str(target)
    assert "platform-secret" not in str(target)
    postgres = next(s for s in target["secrets"] if s["type"] == "postgres")
    assert (postgres["user"], postgres["password"]) == ("lake_builder", "builder-pw")
    s3 = next(s for s in target["secrets"] if s["type"] == "s3")
    assert (s3["key_id"], s3["secret"], s3["scope"]) == ("build-key", "build-secret", "s3://b/lake/")
    assert lake.for_build() is lake  # nothing given: the platform's own
