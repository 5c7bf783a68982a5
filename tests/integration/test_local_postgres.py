"""``pudato local postgres`` from a checkout inside a private (mode 700) folder, as root or not.

As root the server runs as a system user of its own, which cannot enter a private home:
the cluster must then live where that user can reach it, and still survive a restart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from pudato.devstack import free_port

pytestmark = pytest.mark.integration

PUDATO = Path(sys.executable).parent / "pudato"


@pytest.fixture()
def private_checkout() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="pudato-home-"))  # mkdtemp makes it mode 700
    assert home.stat().st_mode & 0o777 == 0o700
    checkout = home / "src" / "pudato"
    checkout.mkdir(parents=True)
    try:
        yield checkout
    finally:
        link = checkout / ".pudato" / "postgres" / "data"
        if link.is_symlink():  # relocated as root: remove the cluster kept outside the checkout too
            shutil.rmtree(Path(os.readlink(link)).parent, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def _start(checkout: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUDATO_")}
    process = subprocess.Popen([str(PUDATO), "local", "postgres", "--port", str(port)], cwd=checkout, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:  # ends when the process exits: no fixed wait decides anything
        lines.append(line.rstrip())
        if "postgres ready" in line:
            return process, lines
    pytest.fail(f"pudato local postgres exited ({process.wait()}):\n" + "\n".join(lines))


def _stop(process: subprocess.Popen[str], lines: list[str]) -> None:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    lines += out.splitlines()
    assert process.returncode == 0, "\n".join(lines)


def _connect(port: int) -> psycopg2.extensions.connection:
    return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="pudato", connect_timeout=10)


def test_local_postgres_runs_from_a_private_folder_and_keeps_its_data(private_checkout: Path) -> None:
    port = free_port()
    process, lines = _start(private_checkout, port)
    try:
        assert any("traceback" in line.lower() for line in lines) is False, lines
        with _connect(port) as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        if os.geteuid() == 0:
            assert any("cannot enter" in line for line in lines), lines  # said once, in one line
    finally:
        _stop(process, lines)
    assert "postgres stopped" in lines

    process, lines = _start(private_checkout, port)
    try:
        assert not any("created a PostgreSQL cluster" in line for line in lines), lines
        connection = _connect(port)
        with connection.cursor() as cursor:
            cursor.execute("SELECT n FROM kept")
            assert cursor.fetchall() == [(42,)]
        connection.close()
    finally:
        _stop(process, lines)
    assert (private_checkout / ".pudato" / "postgres").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to a system user of its own")
def test_local_postgres_that_cannot_relocate_says_so_in_one_line_with_the_fix(private_checkout: Path) -> None:
    from pudato.devstack.postgres import RELOCATED_ROOT

    folder = (private_checkout / ".pudato" / "postgres").resolve()
    home = RELOCATED_ROOT / "clusters" / hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("in the way\n")  # a file where the relocated cluster would go
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUDATO_")}
        result = subprocess.run([str(PUDATO), "local", "postgres", "--port", str(free_port())], cwd=private_checkout,
                                env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        home.unlink()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: pudato-postgres, which runs PostgreSQL for root, cannot enter")
    assert "--folder" in lines[0]
    assert "postgres ready" not in result.stdout
