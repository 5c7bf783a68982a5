"""Local services for the demo, the tests and the stack: moto, PostgreSQL, workers.

Each is a context manager that starts a real process on a free loopback port,
waits until it answers, and stops it (and everything it started) on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pudato.protocol import HANDLERS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: object, what: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group (a worker and its pool children), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def moto_server(port: int | None = None, log_path: Path | None = None) -> Iterator[str]:
    """moto's standalone server on 127.0.0.1; yields its endpoint URL."""
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log, start_new_session=True,
    )
    try:
        _wait(lambda: urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).status == 200,
              "moto server", 60, process)
        yield endpoint
    finally:
        stop(process)


@contextmanager
def postgres_cluster(folder: Path | None = None, port: int | None = None) -> Iterator[dict[str, object]]:
    """A throwaway PostgreSQL cluster. As root, it runs as the ``postgres`` user (initdb refuses root)."""
    port = port or free_port()
    owned = folder is None
    folder = Path(folder or tempfile.mkdtemp(prefix="pudato-pg-"))
    data = folder / "data"
    as_user = _postgres_user_prefix(folder)
    if not (data / "PG_VERSION").exists():
        subprocess.run([*as_user, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    control = PostgresControl(as_user, data, folder, port)
    control.start()
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    try:
        yield {"url": url, "port": port, "control": control}
    finally:
        control.stop()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


class PostgresControl:
    """Start and stop a cluster: the tests stop it mid-job to prove no record is lost."""

    def __init__(self, as_user: list[str], data: Path, folder: Path, port: int) -> None:
        self.as_user, self.data, self.folder, self.port = as_user, data, folder, port

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                        "-l", str(self.folder / "postgres.log"), "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL server")


def _postgres_user_prefix(folder: Path) -> list[str]:
    if os.geteuid() != 0:
        return []
    shutil.chown(folder, "postgres", "postgres")
    folder.chmod(0o700)
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def workers(
    env: dict[str, str],
    handlers: tuple[str, ...] = HANDLERS,
    concurrency: int = 1,
    pool: str = "prefork",
    log_dir: Path | None = None,
    cwd: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """One Celery worker process per handler queue, each consuming only its own queue."""
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for handler in handlers:
            started[handler] = start_worker(handler, env, concurrency, pool, log_dir, cwd, extra_args=extra_args)
        for handler, process in started.items():
            wait_for_worker(process, handler, log_dir)
        yield started
    finally:
        for process in started.values():
            stop(process)


def start_worker(
    handler: str, env: dict[str, str], concurrency: int = 1, pool: str = "prefork",
    log_dir: Path | None = None, cwd: Path | None = None, name: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pudato-workers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name or handler}.log"
    command = [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", f"pudato-{handler}",
        "-n", f"{name or handler}@%h", "-c", str(concurrency), "-P", pool, "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--heartbeat-interval", "30", "-f", str(log_file), *extra_args,
    ]
    process = subprocess.Popen(
        command, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=open(log_file, "ab"),
        start_new_session=True,
    )
    process.log_file = log_file  # type: ignore[attr-defined]
    return process


def wait_for_worker(process: subprocess.Popen[bytes], handler: str, log_dir: Path | None = None,
                    timeout: float = 90) -> None:
    log_file: Path = process.log_file  # type: ignore[attr-defined]
    _wait(lambda: log_file.exists() and " ready." in log_file.read_text(errors="replace"),
          f"the {handler} worker (log: {log_file})", timeout, process)
