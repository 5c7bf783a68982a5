"""A real stack for benchmarks: moto, PostgreSQL, and workers on chosen queues."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pudato import devstack, infra
from pudato.registry.migrate import upgrade
from pudato.settings import Settings, reset_settings

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def bench_stack(handlers: tuple[str, ...], concurrency: int = 2, extra_env: dict[str, str] | None = None,
                include: str | None = None) -> Iterator[dict[str, Any]]:
    state = Path(tempfile.mkdtemp(prefix="pudato-bench-"))
    with devstack.moto_server(log_path=state / "moto.log") as endpoint, devstack.postgres_cluster() as postgres:
        env = {
            "PUDATO_AWS__ENDPOINT_URL": endpoint,
            "PUDATO_AWS__ACCESS_KEY_ID": "bench",
            "PUDATO_AWS__SECRET_ACCESS_KEY": "bench",
            "PUDATO_REGISTRY__URL": str(postgres["url"]),
            "PUDATO_REGISTRY__SPOOL_DIR": str(state / "spool"),
            "PUDATO_WAREHOUSE__PATH": str(state / "warehouse.duckdb"),
            **(extra_env or {}),
        }
        os.environ.update(env)
        reset_settings()
        settings = Settings(_env_file=None)
        infra.up(settings)
        upgrade(settings.registry.url)
        import workers.app  # noqa: F401  (the app jobs.submit sends with: celeryconfig reads these settings)
        extra = ("--include", include) if include else ()
        with devstack.workers(env, handlers=handlers, concurrency=concurrency, log_dir=state / "logs",
                           cwd=REPO, extra_args=extra) as processes:
            yield {"env": env, "settings": settings, "workers": processes, "state": state}
