"""The dbt child's own namespaces: the operating system, not Python, keeps it to the lake.

A Python model (allowed here) starts a subprocess, which the audit hook never sees, and
the subprocess tries a TCP server started here, the lake's endpoint by name, and the
worker's environment under ``/proc``. With namespace isolation only the lake answers;
with the audit hook alone the subprocess gets out, which is the gap the namespace closes.
Real dbt, the real sandboxed child and relay, real git, real sockets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import duckdb
import pytest
from helpers import CountingListener, commit, wait_for

from pudato.backends.transform.isolation import listen_addresses
from pudato.backends.transform.sandboxed import SandboxedRunner, _unshare
from pudato.errors import ConfigurationError
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command, Result
from pudato.settings import AWSSettings, LogicSettings, Settings, TransformSettings, WarehouseSettings

CANARY = "canary-worker-secret-9d2e71"
PROJECT = "name: netns\nversion: '1.0.0'\nconfig-version: 2\nprofile: netns\n"
PROBE = """
import json, socket
outcome = {{}}
for label, host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=10).close()
        outcome[label] = "reached"
    except OSError as exc:
        outcome[label] = type(exc).__name__
for label, path in {files!r}:
    try:
        outcome[label] = open(path).read().strip() or "empty"
    except OSError as exc:
        outcome[label] = type(exc).__name__
try:
    open("/proc/{worker}/environ", "rb").read()
    outcome["worker_environ"] = "read"
except OSError as exc:
    outcome["worker_environ"] = type(exc).__name__
print(json.dumps(outcome))
"""
MODEL = """import subprocess
import sys


def model(dbt, session):
    probe = subprocess.run([sys.executable, "-c", {probe!r}], capture_output=True, text=True, timeout=120)
    said = (probe.stdout.strip() or probe.stderr[-500:]).replace("'", "''")
    return session.sql("select '" + said + "' as outcome")
"""

Isolation = Literal["namespace", "hook"]


@pytest.fixture(scope="module")
def lake() -> Iterator[CountingListener]:
    """Stands in for the lake's S3 endpoint: the one address the sandbox may reach."""
    server = CountingListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[CountingListener]:
    """Any other service on the host (the broker, the registry, a metadata endpoint)."""
    server = CountingListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def worker_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A worker's folder with its ``.env``, and its user's home with AWS credentials: both hold the canary."""
    root = tmp_path_factory.mktemp("worker")
    (root / "work").mkdir()
    (root / "work" / ".env").write_text(f"PUDATO_AWS__SECRET_ACCESS_KEY={CANARY}\n")
    (root / "home" / ".aws").mkdir(parents=True)
    (root / "home" / ".aws" / "credentials").write_text(f"[default]\naws_secret_access_key = {CANARY}\n")
    return {"work": root / "work", "home": root / "home"}


@pytest.fixture
def as_worker(worker_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(worker_files["work"])
    monkeypatch.setenv("HOME", str(worker_files["home"]))


@pytest.fixture(scope="module")
def probe_repo(
    tmp_path_factory: pytest.TempPathFactory,
    lake: CountingListener,
    elsewhere: CountingListener,
    worker_files: dict[str, Path],
) -> dict[str, str]:
    repo = tmp_path_factory.mktemp("netns") / "repo"
    targets = [("elsewhere", "127.0.0.1", elsewhere.port), ("lake_by_name", "localhost", lake.port)]
    files = [("dot_env", str(worker_files["work"] / ".env")),
             ("aws_credentials", str(worker_files["home"] / ".aws" / "credentials"))]  # fmt: skip
    probe = PROBE.format(targets=targets, files=files, worker=os.getpid())
    sha = commit(repo, {"dbt_project.yml": PROJECT, "models/probe.py": MODEL.format(probe=probe)}, "probe")
    return {"url": str(repo), "sha": sha}


def _build(root: Path, repo: dict[str, str], endpoint: str, isolation: Isolation) -> tuple[Result, dict[str, str]]:
    settings = Settings(
        _env_file=None,
        aws=AWSSettings(endpoint_url=endpoint),
        warehouse=WarehouseSettings(path=root / "warehouse.duckdb"),
        logic=LogicSettings(cache_dir=root / "cache"),
        transform=TransformSettings(allow_python_models=True, network_isolation=isolation),
    )
    handler = TransformHandler(settings, runner=SandboxedRunner.from_settings(settings))
    command = Command(handler="transform", action="build", job_id="job-netns", logic_repo=repo["url"],
                      logic_version=repo["sha"])  # fmt: skip
    try:
        result = handler.execute(command)
    finally:
        handler.runner.close()
    if result.status != "succeeded":
        return result, {}
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        (said,) = con.execute("select outcome from probe").fetchone() or ("{}",)
    return result, json.loads(said)


@pytest.mark.usefixtures("as_worker")
def test_a_subprocess_in_the_sandbox_reaches_the_lake_by_name_and_nothing_else(
    tmp_path: Path, probe_repo: dict[str, str], lake: CountingListener, elsewhere: CountingListener
) -> None:
    before_lake, before_elsewhere = lake.accepted, elsewhere.accepted
    result, outcome = _build(tmp_path, probe_repo, f"http://localhost:{lake.port}", "namespace")
    assert result.status == "succeeded", result.error
    assert outcome["lake_by_name"] == "reached"
    assert outcome["elsewhere"] == "ConnectionRefusedError"
    assert outcome["worker_environ"] == "FileNotFoundError"  # its own /proc: the worker is not in it
    assert outcome["dot_env"] == "empty"
    assert outcome["aws_credentials"] == "FileNotFoundError"
    assert lake.accepted == before_lake + 1
    assert elsewhere.accepted == before_elsewhere


@pytest.mark.usefixtures("as_worker")
def test_with_the_audit_hook_alone_a_subprocess_gets_out(
    tmp_path: Path, probe_repo: dict[str, str], lake: CountingListener, elsewhere: CountingListener
) -> None:
    before = elsewhere.accepted
    result, outcome = _build(tmp_path, probe_repo, f"http://localhost:{lake.port}", "hook")
    assert result.status == "succeeded", result.error
    assert outcome["elsewhere"] == "reached"
    assert outcome["worker_environ"] == "read"
    assert CANARY in outcome["dot_env"]
    assert CANARY in outcome["aws_credentials"]
    assert elsewhere.accepted == before + 1


def test_an_endpoint_given_as_an_outside_ip_address_is_refused_clearly(
    tmp_path: Path, probe_repo: dict[str, str]
) -> None:
    result, _ = _build(tmp_path, probe_repo, "http://192.0.2.77:9000", "namespace")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "ConfigurationError"
    assert "192.0.2.77" in result.error.message
    assert "PUDATO_TRANSFORM__NETWORK_ISOLATION=hook" in result.error.message


def test_names_get_loopback_addresses_of_their_own() -> None:
    addresses = listen_addresses(["s3.example.org:443", "db.example.org:5432", "127.0.0.1:9000", "localhost:80",
                                  "db.example.org:6432"])  # fmt: skip
    assert addresses == {
        "s3.example.org": "127.0.0.10",
        "db.example.org": "127.0.0.11",
        "127.0.0.1": "127.0.0.1",
        "localhost": "127.0.0.1",
    }


def test_without_unshare_the_sandbox_says_what_to_install_or_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"util-linux.*PUDATO_TRANSFORM__NETWORK_ISOLATION=hook"):
        _unshare()


WORKER = """
from pathlib import Path
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command
from pudato.settings import LogicSettings, Settings, WarehouseSettings

root = Path({root!r})
settings = Settings(_env_file=None, warehouse=WarehouseSettings(path=root / "w.duckdb"),
                    logic=LogicSettings(cache_dir=root / "cache"))
handler = TransformHandler(settings, runner=SandboxedRunner.from_settings(settings))
handler.execute(Command(handler="transform", action="build", job_id="job-slow", logic_repo={url!r},
                        logic_version={sha!r}))
"""


def _sandbox_processes(folder: Path) -> list[int]:
    """The processes working in ``folder`` (the sandbox's unshare and its child both start there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(folder):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
    return found


def test_when_the_worker_dies_mid_build_the_sandbox_ends_and_leaves_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    slow = "select count(*) as n from range(100000000000) t(i) where i % 7 = 3\n"
    sha = commit(repo, {"dbt_project.yml": PROJECT, "models/slow.sql": slow}, "slow")
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = WORKER.format(root=str(tmp_path), url=str(repo), sha=sha)
    worker = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(temp)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        folder = wait_for(lambda: next(iter(temp.glob("pudato-sandbox-*")), None), 120, "no sandbox started")
        wait_for(lambda: len(_sandbox_processes(folder)) >= 2, 120, "the sandbox's child did not start")
        # Killed mid-build, not mid-start: dbt writes its profile into the folder when a build begins.
        wait_for(lambda: {path.name for path in folder.iterdir()} - {"hosts", "stderr.log"}, 120,
                 "the build did not begin")  # fmt: skip
    finally:
        worker.kill()
        worker.wait(timeout=60)
    wait_for(lambda: not _sandbox_processes(folder), 60, "the sandbox outlived its worker")
    wait_for(lambda: not folder.exists(), 60, "the sandbox's private folder stayed behind")
