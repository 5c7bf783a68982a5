"""Flower as the Procfile starts it asks for a login: no request without the right one gets in.

Flower's pages and API show every task's arguments and result (a command's SQL, its
payload, the rows it returned), so ``pudato flower`` refuses to start without
``PUDATO_FLOWER__BASIC_AUTH``, and Flower then answers 401 to anyone without it. Here
the Procfile's own ``flower:`` line runs under ``sh``, against the session's moto broker.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pudato import devstack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's pudato, as `make stack` puts it on PATH
LOGIN = ("operator", "a-long-random-flower-password")


def _procfile_command(process: str) -> str:
    for line in (REPO / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and name.strip() == process:
            return command.strip()
    raise AssertionError(f"no {process}: line in the Procfile")


def _status(port: int, path: str, login: tuple[str, str] | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if login is not None:
        token = base64.b64encode(":".join(login).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture()
def flower(stack: Any, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = devstack.free_port()
    log = tmp_path / "flower.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUDATO_", "FLOWER_"))}
    env.update(stack.env)
    env.update({
        "STACK_FLOWER_PORT": str(port),
        "PUDATO_FLOWER__BASIC_AUTH": ":".join(LOGIN),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
    })
    with log.open("ab") as output:
        process = subprocess.Popen(["sh", "-c", _procfile_command("flower")], cwd=REPO, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        devstack.wait_until(lambda: None if _listening(port) else "not listening", "Flower", 90, process=process)
        yield port, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        print(log.read_text(errors="replace")[-2000:])


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _command_lines_below(root: int) -> list[str]:
    """The command lines of ``root`` and every process it started (Flower runs in a session of its own)."""
    parents, lines = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    below, found = {root}, True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in below and pid not in below:
                below.add(pid)
                found = True
    return [lines[pid] for pid in below if pid in lines]


@pytest.mark.parametrize("path", ["/", "/tasks", "/api/tasks", "/api/workers", "/workers"])
def test_flower_refuses_a_request_without_the_login(flower: tuple[int, Any], path: str) -> None:
    port, _ = flower
    assert _status(port, path, None) == 401
    assert _status(port, path, (LOGIN[0], "wrong-password")) == 401
    assert _status(port, path, ("someone-else", LOGIN[1])) == 401


def test_flower_accepts_the_right_login(flower: tuple[int, Any]) -> None:
    port, _ = flower
    deadline = time.monotonic() + 60
    status = _status(port, "/", LOGIN)
    while status != 200 and time.monotonic() < deadline:  # the UI answers once Flower has its first view
        time.sleep(0.5)
        status = _status(port, "/", LOGIN)
    assert status == 200
    assert _status(port, "/api/tasks", LOGIN) == 200


def test_the_password_is_on_no_command_line(flower: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, process = flower
    lines = _command_lines_below(process.pid)
    assert any(re.search(rf"flower .*--port={port}", line) for line in lines), lines  # the real Flower is there
    assert not any(LOGIN[1] in line for line in lines)
