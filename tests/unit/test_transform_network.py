"""The sandbox's network guard: a Python model (allowed) reaches the lake's endpoints and nothing else.

Real dbt in the real sandboxed child, a real git repository, and a real TCP
server started here: the model connects to it, and is refused unless the server
is the lake's S3 endpoint in the worker's settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CountingListener, commit

from pudato.backends.transform.network import sandbox_endpoints
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command, Result
from pudato.settings import AWSSettings, LogicSettings, Settings, TransformSettings, WarehouseSettings

PROJECT = "name: netprobe\nversion: '1.0.0'\nconfig-version: 2\nprofile: netprobe\n"
MODEL = """import socket


def model(dbt, session):
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.settimeout(10)
    probe.connect(("127.0.0.1", {port}))
    probe.close()
    return session.sql("select 1 as reached")
"""


@pytest.fixture(scope="module")
def listener() -> Iterator[CountingListener]:
    server = CountingListener()
    yield server
    server.close()


@pytest.fixture(scope="module")
def probe_repo(tmp_path_factory: pytest.TempPathFactory, listener: CountingListener) -> dict[str, str]:
    repo = tmp_path_factory.mktemp("netprobe") / "repo"
    sha = commit(repo, {"dbt_project.yml": PROJECT, "models/probe.py": MODEL.format(port=listener.port)}, "probe")
    return {"url": str(repo), "sha": sha}


def _build(root: Path, repo: dict[str, str], aws: AWSSettings) -> Result:
    settings = Settings(
        _env_file=None,
        aws=aws,
        warehouse=WarehouseSettings(path=root / "warehouse.duckdb"),
        logic=LogicSettings(cache_dir=root / "cache"),
        transform=TransformSettings(allow_python_models=True),
    )
    handler = TransformHandler(settings, runner=SandboxedRunner.from_settings(settings))
    command = Command(handler="transform", action="build", job_id="job-netprobe", logic_repo=repo["url"],
                      logic_version=repo["sha"])  # fmt: skip
    try:
        return handler.execute(command)
    finally:
        handler.runner.close()


def test_a_python_model_cannot_connect_to_another_host(
    tmp_path: Path, probe_repo: dict[str, str], listener: CountingListener
) -> None:
    before = listener.accepted
    result = _build(tmp_path, probe_repo, AWSSettings(endpoint_url="http://127.0.0.1:9"))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "TransformFailed"
    assert f"refused a network connection to 127.0.0.1:{listener.port}" in result.error.message
    assert "127.0.0.1:9" in result.error.message  # the error names what is reachable
    assert listener.accepted == before


def test_a_python_model_reaches_the_lakes_endpoint(
    tmp_path: Path, probe_repo: dict[str, str], listener: CountingListener
) -> None:
    before = listener.accepted
    result = _build(tmp_path, probe_repo, AWSSettings(endpoint_url=f"http://127.0.0.1:{listener.port}"))
    assert result.status == "succeeded", result.error
    deadline = time.monotonic() + 30
    while listener.accepted == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.accepted == before + 1


def test_the_endpoints_come_from_the_settings() -> None:
    lake = Settings(
        _env_file=None,
        aws=AWSSettings(endpoint_url="https://minio.internal"),
        warehouse=WarehouseSettings(
            backend="ducklake", catalog_url="postgresql://lake@db.internal:6543/lake", data_path="s3://bucket/lake/"
        ),
    )
    assert sandbox_endpoints(lake) == ["minio.internal:443", "db.internal:6543"]
    aws: dict[str, Any] = {"region": "eu-west-1"}
    on_aws = Settings(_env_file=None, aws=AWSSettings(**aws), warehouse=WarehouseSettings(data_path="s3://b/lake/"))
    assert sandbox_endpoints(on_aws) == [
        "s3.eu-west-1.amazonaws.com:443",
        "s3.amazonaws.com:443",
        "b.s3.eu-west-1.amazonaws.com:443",
    ]


def test_package_downloads_leave_the_network_open() -> None:
    settings = Settings(_env_file=None, transform=TransformSettings(allow_package_downloads=True))
    assert SandboxedRunner.from_settings(settings).network is None
