"""A hostile logic repository against the sandboxed runner: real dbt, real git, a tmp DuckDB warehouse.

Each commit of the repository tries one thing the review found working: a Python
model that runs a program, a hook that writes outside the project, ``env_var()``
of a platform secret, a model that reads ``/etc/passwd``, and a seed that is a
symbolic link to it. Each is refused or contained, and the secret (a canary in
the worker's environment and settings) shows in no table, record or log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from helpers import git
from pydantic import SecretStr

from pudato.backends.transform import SANDBOX_PREFIX
from pudato.backends.transform.inprocess import InProcessRunner
from pudato.backends.transform.policy import redact
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command, Result
from pudato.settings import AWSSettings, LogicSettings, Settings, TransformSettings, WarehouseSettings

CANARY = "canary-secret-4f1c9a"
PROJECT = "name: hostile\nversion: '1.0.0'\nconfig-version: 2\nprofile: hostile\n"
SAFE = {"models/ok.sql": "select 1 as id\n"}


def _commit_on(repo: Path, branch: str, files: dict[str, str], project_extra: str = "") -> str:
    git(repo, "checkout", "-q", "--orphan", branch)
    git(repo, "rm", "-rq", "--cached", "--ignore-unmatch", ".")
    for old in repo.iterdir():
        if old.name != ".git":
            subprocess.run(["rm", "-rf", str(old)], check=True)
    for name, text in {"dbt_project.yml": PROJECT + project_extra, **SAFE, **files}.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text.startswith("symlink:"):
            path.symlink_to(text.removeprefix("symlink:"))
        else:
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", branch)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "pwned"
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commits = {
        "python": _commit_on(
            repo,
            "python",
            {
                "models/run_program.py": (
                    "import subprocess\n\n\ndef model(dbt, session):\n"
                    f"    subprocess.run(['touch', {str(marker)!r}])\n    return session.sql('select 1 as x')\n"
                )
            },
        ),
        "hook": _commit_on(repo, "hook", {}, f"on-run-start:\n  - \"copy (select 1 as x) to '{marker}'\"\n"),
        "post_hook": _commit_on(
            repo,
            "post_hook",
            {
                "models/hooked.sql": (
                    "{{ config(post_hook=\"copy (select 1 as x) to '" + str(marker) + "'\") }}\nselect 1 as x\n"
                )
            },
        ),
        "env_default": _commit_on(
            repo,
            "env_default",
            {
                "models/leak.sql": (
                    "select '{{ env_var('PUDATO_AWS__SECRET_ACCESS_KEY', 'absent') }}' as leaked, "
                    "'{{ env_var('ANALYST_REGION', 'unset') }}' as region\n"
                )
            },
        ),
        "env_required": _commit_on(
            repo,
            "env_required",
            {"models/leak.sql": ("select '{{ env_var('PUDATO_AWS__SECRET_ACCESS_KEY') }}' as leaked\n")},
        ),
        "passwd": _commit_on(
            repo, "passwd", {"models/passwd.sql": ("select * from read_csv('/etc/passwd', delim=':', header=false)\n")}
        ),
        "read_text": _commit_on(
            repo, "read_text", {"models/other.sql": (f"select * from read_text('{root}/outside.txt')\n")}
        ),
        "unlock": _commit_on(
            repo,
            "unlock",
            {
                "models/unlock.sql": (
                    "{% if execute %}{% do run_query('set enable_external_access = true') %}{% endif %}\n"
                    "select * from read_csv('/etc/passwd', delim=':', header=false)\n"
                )
            },
        ),
        "seed_link": _commit_on(repo, "seed_link", {"seeds/users.csv": "symlink:/etc/passwd"}),
    }
    (root / "outside.txt").write_text("private\n")
    return {"root": root, "url": str(repo), "marker": marker, **commits}


@pytest.fixture(scope="module")
def sandboxed(hostile: dict[str, Any]) -> Iterator[TransformHandler]:
    """One handler (so one warm sandbox) for the module."""
    root: Path = hostile["root"]
    with pytest.MonkeyPatch.context() as patch:
        # The canary is the worker's: in its environment (where env_var() would look) and its settings.
        patch.setenv("PUDATO_AWS__SECRET_ACCESS_KEY", CANARY)
        patch.setenv("ANALYST_REGION", "eu-west-1")
        patch.setattr(tempfile, "tempdir", str(root / "tmp"))
        (root / "tmp").mkdir()
        settings = Settings(
            _env_file=None,
            aws=AWSSettings(access_key_id="testing", secret_access_key=SecretStr(CANARY)),
            warehouse=WarehouseSettings(path=root / "warehouse.duckdb"),
            logic=LogicSettings(cache_dir=root / "cache"),
            transform=TransformSettings(env_vars=["ANALYST_REGION"]),
        )
        handler = TransformHandler(settings, runner=SandboxedRunner.from_settings(settings))
        yield handler
        handler.runner.close()


@pytest.fixture
def handler(sandboxed: TransformHandler) -> Iterator[TransformHandler]:
    settings = sandboxed.settings
    yield sandboxed
    sandboxed.settings = settings


def _build(handler: TransformHandler, hostile: dict[str, Any], case: str) -> Result:
    command = Command(handler="transform", action="build", job_id=f"job-{case}", logic_repo=hostile["url"],
                      logic_version=hostile[case])  # fmt: skip
    return handler.execute(command)


def _everything_recorded(handler: TransformHandler, result: Result) -> str:
    """The Result as stored and sent, every table's rows, and every file dbt wrote."""
    texts = [result.model_dump_json()]
    if not Path(handler.warehouse.location).exists():  # type: ignore[attr-defined]
        return "\n".join(texts)
    with duckdb.connect(str(handler.warehouse.location), read_only=True) as con:  # type: ignore[attr-defined]
        for schema, table in con.execute("select schema_name, table_name from duckdb_tables()").fetchall():
            texts.append(json.dumps(con.execute(f'select * from "{schema}"."{table}"').fetchall(), default=str))
    for path in handler.work_root.rglob("*"):
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def _failed(result: Result, error_type: str, *words: str) -> None:
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == error_type, result.error
    for word in words:
        assert word in result.error.message


def test_a_python_model_is_refused_and_never_runs(handler: TransformHandler, hostile: dict[str, Any]) -> None:
    result = _build(handler, hostile, "python")
    _failed(result, "TransformRefused", "model.hostile.run_program", "PUDATO_TRANSFORM__ALLOW_PYTHON_MODELS")
    assert result.error is not None
    assert result.error.kind == "terminal"
    assert not hostile["marker"].exists()


@pytest.mark.parametrize("case", ["hook", "post_hook"])
def test_hooks_are_refused(handler: TransformHandler, hostile: dict[str, Any], case: str) -> None:
    result = _build(handler, hostile, case)
    _failed(result, "TransformRefused", "hooks", "PUDATO_TRANSFORM__ALLOW_HOOKS")
    assert not hostile["marker"].exists()


def test_an_allowed_hook_still_cannot_write_outside(handler: TransformHandler, hostile: dict[str, Any]) -> None:
    handler.settings = handler.settings.model_copy(update={"transform": TransformSettings(allow_hooks=True)})
    result = _build(handler, hostile, "hook")
    _failed(result, "TransformFailed", "disabled by configuration")
    assert not hostile["marker"].exists()


def test_env_var_sees_only_the_allow_list(handler: TransformHandler, hostile: dict[str, Any]) -> None:
    result = _build(handler, hostile, "env_default")
    assert result.status == "succeeded", result.error
    with duckdb.connect(str(handler.warehouse.location), read_only=True) as con:  # type: ignore[attr-defined]
        assert con.execute("select leaked, region from leak").fetchall() == [("absent", "eu-west-1")]
    assert CANARY not in _everything_recorded(handler, result)


def test_env_var_of_a_secret_without_default_fails_without_the_secret(
    handler: TransformHandler, hostile: dict[str, Any]
) -> None:
    result = _build(handler, hostile, "env_required")
    _failed(result, "TransformFailed", "PUDATO_AWS__SECRET_ACCESS_KEY")
    assert CANARY not in _everything_recorded(handler, result)


@pytest.mark.parametrize(
    ("case", "words"),
    [("passwd", "disabled by configuration"), ("read_text", "disabled by configuration"),
     ("unlock", "the configuration has been locked")],
)  # fmt: skip
def test_a_model_cannot_read_files_outside_the_lake(
    handler: TransformHandler, hostile: dict[str, Any], case: str, words: str
) -> None:
    result = _build(handler, hostile, case)
    _failed(result, "TransformFailed", words)
    recorded = _everything_recorded(handler, result)
    assert "root:x:0:0" not in recorded
    assert "private" not in recorded.replace("private to", "")


def test_a_seed_linked_outside_the_repository_is_refused(handler: TransformHandler, hostile: dict[str, Any]) -> None:
    result = _build(handler, hostile, "seed_link")
    _failed(result, "UnsafeInput", "seeds/users.csv", "outside the repository")
    assert "root:x:0:0" not in _everything_recorded(handler, result)


def test_the_sandbox_leaves_no_folder_behind(handler: TransformHandler, hostile: dict[str, Any]) -> None:
    assert _build(handler, hostile, "env_default").status == "succeeded"
    temp = hostile["root"] / "tmp"
    assert [p.name.startswith(SANDBOX_PREFIX) for p in temp.iterdir()] == [True]
    handler.runner.close()
    assert list(temp.iterdir()) == []


def test_in_process_records_redact_the_secret(
    hostile: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process dbt is trusted with the worker's environment; what is recorded still never holds a secret.
    monkeypatch.setenv("PUDATO_AWS__SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    settings = Settings(
        _env_file=None,
        aws=AWSSettings(access_key_id="testing", secret_access_key=SecretStr(CANARY)),
        warehouse=WarehouseSettings(path=tmp_path / "warehouse.duckdb"),
        logic=LogicSettings(cache_dir=tmp_path / "cache"),
        transform=TransformSettings(runner="inprocess"),
    )
    handler = TransformHandler(settings)
    assert isinstance(handler.runner, InProcessRunner)
    result = _build(handler, hostile, "env_default")
    assert result.status == "succeeded", result.error
    assert CANARY not in result.model_dump_json()
    assert "[redacted]" in json.dumps(result.data["nodes"])
    assert len(list((tmp_path / "tmp").glob("pudato-dbt-profiles-*"))) == 1
    handler.runner.close()
    assert list((tmp_path / "tmp").glob("pudato-dbt-profiles-*")) == []  # the profile (it holds secrets) is gone


def test_the_sandbox_is_recycled_and_replaced_when_it_dies(hostile: dict[str, Any], tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        warehouse=WarehouseSettings(path=tmp_path / "warehouse.duckdb"),
        logic=LogicSettings(cache_dir=tmp_path / "cache"),
    )
    runner = SandboxedRunner(recycle_after=2)
    handler = TransformHandler(settings, runner=runner)
    try:
        assert _build(handler, hostile, "env_default").status == "succeeded"
        first = runner.child_pid
        assert first is not None
        assert _build(handler, hostile, "env_default").status == "succeeded"
        assert runner.child_pid is None  # two invocations: recycled
        assert _build(handler, hostile, "env_default").status == "succeeded"
        second = runner.child_pid
        assert second not in (None, first)
        os.kill(second, signal.SIGKILL)  # between steps: the next step gets a new child
        deadline = time.monotonic() + 30
        while _alive(second) and time.monotonic() < deadline:
            time.sleep(0.05)
        replaced = _build(handler, hostile, "env_default")
        assert replaced.status == "succeeded", replaced.error
        assert runner.child_pid not in (None, second)
    finally:
        runner.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return " Z" not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    except OSError:
        return False


def test_every_secret_the_settings_hold_is_redacted() -> None:
    settings = Settings(
        _env_file=None,
        aws=AWSSettings(secret_access_key=SecretStr("aws-secret")),
        registry={"url": "postgresql+psycopg2://pudato:reg%40pw@db:5432/pudato"},
        warehouse=WarehouseSettings(catalog_password=SecretStr("lake-pw")),
        transform=TransformSettings(s3_secret_access_key=SecretStr("build-secret")),
    )
    secrets = settings.secret_values()
    assert set(secrets) >= {"aws-secret", "reg@pw", "reg%40pw", "lake-pw", "build-secret"}
    text = "select 'aws-secret', 'reg@pw' -- lake-pw build-secret"
    assert redact({"sql": [text]}, secrets) == {"sql": ["select '[redacted]', '[redacted]' -- [redacted] [redacted]"]}


def test_packages_fetched_over_the_network_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    metadata = "http://169.254.169.254/latest/meta-data/x.tgz"
    packages = f"packages:\n  - local: pkgs/mine\n  - tarball: {metadata}\n    name: x\n"
    sha = _commit_on(repo, "remote", {"packages.yml": packages, "pkgs/mine/dbt_project.yml": "name: mine\n"})
    settings = Settings(
        _env_file=None,
        warehouse=WarehouseSettings(path=tmp_path / "warehouse.duckdb"),
        logic=LogicSettings(cache_dir=tmp_path / "cache"),
    )
    handler = TransformHandler(settings, runner=InProcessRunner())  # refused before dbt runs
    result = _build(handler, {"url": str(repo), "remote": sha}, "remote")
    _failed(result, "TransformRefused", "169.254.169.254", "PUDATO_TRANSFORM__ALLOW_PACKAGE_DOWNLOADS")
