"""The logic backend's limits: allowed hosts, local paths, and remotes that hang.

The hanging remotes are real local TCP servers: one accepts and never answers,
one never accepts (its backlog is full, so the kernel drops new connections).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pudato.backends.logic import RemoteTimedOut, check_url
from pudato.backends.logic.git import GitLogicRepository
from pudato.errors import UnsafeInput
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command
from pudato.settings import LogicSettings, Settings, WarehouseSettings


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture
def unaccepting_server() -> Iterator[int]:
    """Listens with a full backlog and never accepts: new connections are left hanging."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    server.close()


def _backend(tmp_path: Path, **options: Any) -> GitLogicRepository:
    return GitLogicRepository(
        tmp_path / "cache", ["https", "http", "ssh", "file"], True, allowed_hosts=["127.0.0.1", "*.example.org"],
        **options,
    )  # fmt: skip


def test_a_remote_that_accepts_and_never_answers_fails_terminally(tmp_path: Path, silent_server: int) -> None:
    backend = _backend(tmp_path, low_speed_time_s=2, timeout_s=120.0)
    started = time.monotonic()
    with pytest.raises(RemoteTimedOut) as raised:
        backend.resolve(f"http://127.0.0.1:{silent_server}/team/logic.git", "main")
    assert time.monotonic() - started < 60
    assert raised.value.kind == "terminal"
    assert "stopped answering" in raised.value.message
    assert f"127.0.0.1:{silent_server}" in raised.value.message


def test_a_remote_that_never_accepts_fails_on_the_connect_limit(tmp_path: Path, unaccepting_server: int) -> None:
    backend = _backend(tmp_path, connect_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(RemoteTimedOut, match="did not accept a connection within 1 s"):
        backend.resolve(f"https://127.0.0.1:{unaccepting_server}/team/logic.git", "main")
    assert time.monotonic() - started < 30


def test_a_hanging_remote_fails_the_transform_step_once_and_terminally(tmp_path: Path, silent_server: int) -> None:
    settings = Settings(
        _env_file=None,
        warehouse=WarehouseSettings(path=tmp_path / "w.duckdb"),
        logic=LogicSettings(cache_dir=tmp_path / "cache", allowed_schemes=["http"], allowed_hosts=["127.0.0.1"],
                            low_speed_time_s=2),
    )  # fmt: skip
    command = Command(handler="transform", action="build", payload={
        "repo": f"http://127.0.0.1:{silent_server}/logic.git", "ref": "main"})  # fmt: skip
    result = TransformHandler(settings).execute(command)
    assert result.error is not None
    assert result.error.type == "RemoteTimedOut"
    assert result.error.kind == "terminal"  # so Celery does not retry it


@pytest.mark.parametrize(
    ("url", "pattern"),
    [
        ("https://github.com/team/logic.git", "host 'github.com' is not allowed"),
        ("https://example.org.evil.net/logic.git", "host 'example.org.evil.net' is not allowed"),
        ("ssh://git@evil.net:2222/logic.git", "host 'evil.net' is not allowed"),
        ("git@evil.net:team/logic.git", "host 'evil.net' is not allowed"),
        ("https://user@[::1]:8443/logic.git", "host '::1' is not allowed"),
    ],
)
def test_hosts_off_the_list_are_refused(url: str, pattern: str) -> None:
    with pytest.raises(UnsafeInput, match=pattern):
        check_url(url, ["https", "ssh"], False, ["127.0.0.1", "*.example.org"])


@pytest.mark.parametrize(
    "url", ["https://example.org/logic.git", "https://git.example.org:8443/logic.git", "git@a.b.example.org:t/l.git"]
)
def test_hosts_on_the_list_pass(url: str) -> None:
    assert check_url(url, ["https", "ssh"], False, ["127.0.0.1", "*.example.org"]) == url


def test_no_allowed_hosts_means_no_remote_at_all() -> None:
    with pytest.raises(UnsafeInput, match=r"allowed hosts: none \(PUDATO_LOGIC__ALLOWED_HOSTS\)"):
        check_url("https://github.com/team/logic.git", ["https"], False, [])


def test_local_paths_off_also_refuses_file_urls(tmp_path: Path) -> None:
    with pytest.raises(UnsafeInput, match="local repository paths are not allowed"):
        check_url(f"file://{tmp_path}", ["https", "file"], False, [])
    with pytest.raises(UnsafeInput, match="local repository paths are not allowed"):
        check_url(str(tmp_path), ["https", "file"], False, [])
    assert check_url(f"file://{tmp_path}", ["file"], True, []) == f"file://{tmp_path}"
