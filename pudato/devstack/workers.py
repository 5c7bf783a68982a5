"""One Celery worker process per handler queue, for the tests, the demo and benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pudato.devstack.processes import stop, wait_until
from pudato.protocol import HANDLERS


class WorkerProcess(subprocess.Popen[bytes]):
    """A worker's process, with the log file it writes to."""

    log_file: Path


@contextmanager
def workers(
    env: dict[str, str],
    handlers: tuple[str, ...] = HANDLERS,
    concurrency: int = 1,
    pool: str = "prefork",
    log_dir: Path | None = None,
    cwd: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[dict[str, WorkerProcess]]:
    """One Celery worker process per handler queue, each consuming only its own queue."""
    started: dict[str, WorkerProcess] = {}
    try:
        for handler in handlers:
            started[handler] = start_worker(handler, env, concurrency, pool, log_dir, cwd, extra_args=extra_args)
        for handler, process in started.items():
            wait_for_worker(process, handler)
        yield started
    finally:
        for process in started.values():
            stop(process)


def start_worker(
    handler: str, env: dict[str, str], concurrency: int = 1, pool: str = "prefork",
    log_dir: Path | None = None, cwd: Path | None = None, name: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> WorkerProcess:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pudato-workers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name or handler}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", f"pudato-{handler}",
        "-n", f"{name or handler}@%h", "-c", str(concurrency), "-P", pool, "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--heartbeat-interval", "30", "-f", str(log_file), *extra_args,
    ]
    process = WorkerProcess(
        command, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
        stderr=open(log_file, "ab"),  # noqa: SIM115 (the worker owns it)
        start_new_session=True,
    )
    process.log_file = log_file
    return process


def wait_for_worker(process: WorkerProcess, handler: str, timeout: float = 120) -> None:
    log_file = process.log_file

    def ready() -> str | None:
        if log_file.exists() and " ready." in log_file.read_text(errors="replace"):
            return None
        return f"no 'ready.' in {log_file} yet"

    wait_until(ready, f"the {handler} worker", timeout, process)
