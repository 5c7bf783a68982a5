"""docker-compose.yml publishes nothing beyond loopback and writes no password down.

Compose itself is not needed: the file is parsed as YAML (anchors and ``<<`` merges
resolved), which is what compose reads before it interpolates ``${…}`` from ``.env``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|BASIC_AUTH|TOKEN|CREDENTIAL", re.I)
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?P<rule>:?[?\-][^}]*)?\}")
URL_PASSWORD = re.compile(r"://[^/@:\s]+:(?P<password>\$\{[^}]*\}|[^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _environments(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    found = {}
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):  # NAME=value form
            environment = dict(item.partition("=")[::2] for item in environment)
        found[name] = {key: str(value) for key, value in environment.items()}
    return found


def _is_required_interpolation(value: str) -> bool:
    """The whole value is ``${NAME:?…}``: compose refuses to start without it, and there is no default."""
    match = INTERPOLATION.fullmatch(value)
    return bool(match and (match.group("rule") or "").startswith((":?", "?")))


def test_every_published_port_listens_on_loopback_only(compose: dict[str, Any]) -> None:
    published = []
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for port in service.get("ports", []):
            if isinstance(port, dict):  # the long syntax
                published.append((name, port.get("host_ip")))
            else:
                published.append((name, str(port).split(":")[0] if str(port).count(":") == 2 else None))
    assert published, "no service publishes a port: the test is looking at the wrong file"
    assert {name for name, _ in published} == {"moto", "postgres", "flower"}
    for name, host_ip in published:
        assert host_ip == "127.0.0.1", f"{name} is published on {host_ip or 'every interface'}"


def test_secrets_come_from_env_and_are_required(compose: dict[str, Any]) -> None:
    checked = 0
    for service, environment in _environments(compose).items():
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert _is_required_interpolation(value), f"{service}: {key} is written down, not taken from .env"
                checked += 1
    assert checked >= 3  # postgres's own, the catalog's, the AWS secret, Flower's login


def test_urls_carry_no_literal_password(compose: dict[str, Any]) -> None:
    urls = 0
    for service, environment in _environments(compose).items():
        for key, value in environment.items():
            for match in URL_PASSWORD.finditer(value):
                urls += 1
                assert _is_required_interpolation(match.group("password")), f"{service}: {key} has a literal password"
    assert urls >= 1  # the registry URL


def test_no_literal_pudato_password_anywhere(compose: dict[str, Any]) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)password\S*\s*[:=]\s*['\"]?pudato\b", text)
    assert ":pudato@" not in text


def test_flower_requires_a_login(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["command"][:2] == ["pudato", "flower"]  # the command that refuses to start without one
    assert _is_required_interpolation(flower["environment"]["PUDATO_FLOWER__BASIC_AUTH"])


def test_only_the_transform_worker_may_make_the_sandbox_namespaces(compose: dict[str, Any]) -> None:
    relaxed = {name for name, service in compose["services"].items() if service.get("security_opt")}
    assert relaxed == {"worker-transform"}
    options = compose["services"]["worker-transform"]["security_opt"]
    assert sorted(options) == ["apparmor=unconfined", "seccomp=unconfined", "systempaths=unconfined"]
    assert "privileged" not in compose["services"]["worker-transform"]
    assert "cap_add" not in compose["services"]["worker-transform"]


def test_every_variable_compose_needs_is_in_env_example_without_a_password(compose: dict[str, Any]) -> None:
    example = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.startswith("#"):
            example[name] = value
    required = {m.group("name") for m in INTERPOLATION.finditer((REPO / "docker-compose.yml").read_text())
                if (m.group("rule") or "").startswith((":?", "?"))}
    assert required
    assert required <= set(example), f".env.example lacks {sorted(required - set(example))}"
    for name in ("STACK_POSTGRES_PASSWORD", "PUDATO_FLOWER__BASIC_AUTH"):
        assert example[name] == "", f"{name} has a value in .env.example, shared by every install"


def test_the_env_file_is_never_committed_nor_copied_into_the_image() -> None:
    for ignore in (".gitignore", ".dockerignore"):
        entries = {line.strip() for line in (REPO / ignore).read_text().splitlines()}
        assert ".env" in entries, f"{ignore} lets .env (the passwords) through"
