"""Integration fixtures: a real moto server, a real PostgreSQL cluster, real Celery workers.

One stack serves the whole session: moto and PostgreSQL on free loopback ports,
``pudato infra up`` and the registry migrations applied, and one worker process
per handler queue, each consuming only its own queue.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pudato import infra, local
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry
from pudato.settings import Settings, reset_settings

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "pudato" / "demo_data"

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    env: dict[str, str]
    endpoint: str
    postgres: dict[str, Any]
    workers: dict[str, Any]
    state: Path

    def settings(self) -> Settings:
        return Settings(_env_file=None)

    @property
    def registry(self) -> Registry:
        return Registry(self.env["PUDATO_REGISTRY__URL"])

    def client(self, service: str) -> Any:
        from pudato import aws

        return aws.client(service, self.settings().aws)

    def worker_log(self, handler: str) -> str:
        return Path(self.workers[handler].log_file).read_text(errors="replace")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("stack")
    with local.moto_server(log_path=state / "moto.log") as endpoint, local.postgres_cluster() as postgres:
        env = {
            "PUDATO_AWS__ENDPOINT_URL": endpoint,
            "PUDATO_AWS__ACCESS_KEY_ID": "testing",
            "PUDATO_AWS__SECRET_ACCESS_KEY": "testing",
            "PUDATO_STORAGE__BACKEND": "s3",
            "PUDATO_STORAGE__BUCKET": "pudato-test",
            "PUDATO_STORAGE__IMPORT_ROOTS": f'["{DATA}"]',
            "PUDATO_REGISTRY__URL": str(postgres["url"]),
            "PUDATO_REGISTRY__SPOOL_DIR": str(state / "spool"),
            "PUDATO_WAREHOUSE__PATH": str(state / "warehouse.duckdb"),
            # The lake: catalog database pudato_lake on this PostgreSQL (infra.up creates it), data in the bucket.
            "PUDATO_WAREHOUSE__BACKEND": "ducklake",
            "PUDATO_WAREHOUSE__EXTENSION_DIR": str(state / "duckdb_extensions"),
            "PUDATO_WORKER__LIVENESS_DIR": str(state / "liveness"),
            "PUDATO_LOGIC__CACHE_DIR": str(state / "logic"),
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        reset_settings()
        settings = Settings(_env_file=None)
        infra.up(settings)
        upgrade(settings.registry.url)
        with local.workers(env, log_dir=state / "logs", cwd=REPO) as processes:
            yield Stack(env, endpoint, postgres, processes, state)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
