"""Integration fixtures: a real moto server, a real PostgreSQL cluster, real Celery workers.

One stack serves the whole session: moto and PostgreSQL on free loopback ports,
``pudato infra up`` and the registry migrations applied, and one worker process
per handler queue, each consuming only its own queue.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pudato import devstack, infra
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


class LineageReceiver:
    """A real HTTP endpoint for OpenLineage events (what Marquez offers), that can be stopped and started."""

    def __init__(self) -> None:
        self.port = devstack.free_port()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.events.append(json.loads(body))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        """The events of a job's run and of the runs whose parent it is, in the order they arrived."""
        with self._lock:
            return [e for e in self.events if e["run"]["runId"] == job_id
                    or (e["run"].get("facets") or {}).get("parent", {}).get("run", {}).get("runId") == job_id]


@pytest.fixture(scope="session")
def lineage_receiver() -> Iterator[LineageReceiver]:
    receiver = LineageReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def pudato_app_is_current() -> None:
    """jobs.submit sends with Celery's current app: a test that made an app of its own (for another
    broker) must not leave it current for the next test."""
    if "workers.app" in sys.modules:
        sys.modules["workers.app"].app.set_current()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, lineage_receiver: LineageReceiver) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("stack")
    with devstack.moto_server(log_path=state / "moto.log") as endpoint, devstack.postgres_cluster() as postgres:
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
            # OpenLineage, configured its own way: every step of every test reports to the receiver.
            "OPENLINEAGE__TRANSPORT__TYPE": "http",
            "OPENLINEAGE__TRANSPORT__URL": lineage_receiver.url,
            "OPENLINEAGE__TRANSPORT__TIMEOUT": "2",
            "OPENLINEAGE__TRANSPORT__RETRY": '{"total": 1, "backoff_factor": 0.1}',
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        reset_settings()
        settings = Settings(_env_file=None)
        infra.up(settings)
        upgrade(settings.registry.url)
        # The app jobs.submit sends with; imported now because celeryconfig reads these settings.
        import workers.app  # noqa: F401
        with devstack.workers(env, log_dir=state / "logs", cwd=REPO) as processes:
            yield Stack(env, endpoint, postgres, processes, state)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
