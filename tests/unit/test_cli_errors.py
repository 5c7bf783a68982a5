"""The ``pudato`` command through a real subprocess: every error is one line, ``--debug`` adds the traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pudato(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PUDATO_", "FLOWER_"))}
    clean["PYTHONPATH"] = str(REPO)  # this checkout's code, whatever is installed
    return subprocess.run([sys.executable, "-m", "pudato", *args], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["jobs", "nonsense"], 2, "No such command 'nonsense'"),
        (["jobs", "show"], 2, "Missing argument"),
        (["run", "p", "--repo", "ext::sh -c touch% /tmp/x"], 1, "repository URL"),
        (["flower"], 1, "PUDATO_FLOWER__BASIC_AUTH"),
    ],
    ids=["unknown-command", "missing-argument", "refused-input", "flower-without-login"],
)
def test_an_error_is_one_line(tmp_path: Path, args: list[str], code: int, says: str) -> None:
    result = pudato(*args, cwd=tmp_path)
    assert result.returncode == code
    assert says in _error_line(result)
    assert result.stdout == ""


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = pudato("jobs", "list", cwd=tmp_path, env={"PUDATO_WAREHOUSE__MAX_ROWS": "many"})
    assert result.returncode == 1
    assert "PUDATO_WAREHOUSE__MAX_ROWS" in _error_line(result)


def test_an_unexpected_error_is_one_line_too(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    result = pudato("jobs", "list", cwd=tmp_path,
                    env={"PUDATO_REGISTRY__URL": f"sqlite:///{tmp_path}/not-a-folder/registry.db"})
    assert result.returncode == 1
    line = _error_line(result)
    assert line.startswith("Error: FileExistsError: ")
    assert line.endswith("(--debug shows the traceback)")


def test_a_registry_error_is_one_line_with_the_fix(tmp_path: Path) -> None:
    result = pudato("datasets", "history", "s3://bucket/key", cwd=tmp_path,
                    env={"PUDATO_REGISTRY__URL": f"sqlite:///{tmp_path}/empty.db"})
    assert result.returncode == 1
    assert "pudato registry upgrade" in _error_line(result)


def test_debug_shows_the_traceback_and_then_the_same_line(tmp_path: Path) -> None:
    plain = pudato("run", "p", "--repo", "-upload-pack=touch", cwd=tmp_path)
    debug = pudato("--debug", "run", "p", "--repo", "-upload-pack=touch", cwd=tmp_path)
    assert debug.returncode == plain.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "Traceback" not in plain.stderr
    assert debug.stderr.strip().splitlines()[-1] == _error_line(plain)


def test_a_malformed_flower_login_is_refused_without_echoing_it(tmp_path: Path) -> None:
    result = pudato("flower", cwd=tmp_path, env={"PUDATO_FLOWER__BASIC_AUTH": "admin:ok-password,hunter2"})
    assert result.returncode == 1
    line = _error_line(result)
    assert "login 2 is not user:password" in line
    assert "hunter2" not in result.stderr + result.stdout


def test_local_env_writes_fresh_secrets_readable_by_the_owner_alone(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text((REPO / ".env.example").read_text())
    result = pudato("local", "env", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = (tmp_path / ".env").read_text()
    values = dict(line.partition("=")[::2] for line in written.splitlines() if "=" in line and line[0] != "#")
    user, _, password = values["PUDATO_FLOWER__BASIC_AUTH"].partition(":")
    assert user == "admin"
    assert len(password) >= 20
    assert len(values["STACK_POSTGRES_PASSWORD"]) == 32
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert password not in result.stdout  # says where the login is, never what it is

    again = pudato("local", "env", cwd=tmp_path)
    assert again.returncode == 1
    assert "exists already" in _error_line(again)
    assert (tmp_path / ".env").read_text() == written


def test_flower_runs_open_only_when_told_or_guarded_by_its_own_oauth() -> None:
    from pudato import flower
    from pudato.errors import ConfigurationError
    from pudato.settings import FlowerSettings

    with pytest.raises(ConfigurationError, match="Flower has no login"):
        flower.basic_auth(FlowerSettings())
    assert flower.basic_auth(FlowerSettings(allow_unauthenticated=True)) is None
    assert flower.basic_auth(FlowerSettings(), oauth=True) is None
    assert flower.basic_auth(FlowerSettings(basic_auth=" a:b , c:d ")) == "a:b,c:d"
