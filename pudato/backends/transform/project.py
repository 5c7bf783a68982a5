"""The analysts' dbt project as the runner sees it: its profile name, its packages, dbt's command line.

Everything here reads the checkout (never writes it) or builds arguments; values
from messages (selectors, targets) are checked by the handler before they get here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from pudato.backends.logic import Checkout
from pudato.errors import InvalidCommand

_PROFILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_FLAGS = ["--quiet", "--no-use-colors", "--no-send-anonymous-usage-stats", "--no-version-check"]


def project_yaml(project: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load((project / "dbt_project.yml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidCommand(f"cannot read {project / 'dbt_project.yml'}: {exc}") from None
    return loaded if isinstance(loaded, dict) else {}


def profile_name(checkout: Checkout, repo: str) -> str:
    """The profile ``dbt_project.yml`` names (Pudato writes it); InvalidCommand if this is no dbt project."""
    if not (checkout.path / "dbt_project.yml").is_file():
        raise InvalidCommand(
            f"{repo} at {checkout.sha[:12]} is not a dbt project: no dbt_project.yml in {checkout.path}",
            repo=repo,
            logic_version=checkout.sha,
        )
    profile = str(project_yaml(checkout.path).get("profile") or "pudato")
    if not _PROFILE.match(profile):
        raise InvalidCommand(f"dbt_project.yml names profile {profile[:80]!r}; Pudato needs a plain name")
    return profile


def needs_deps(project: Path) -> bool:
    """Whether the project declares packages that are not installed yet."""
    install_path = project / str(project_yaml(project).get("packages-install-path") or "dbt_packages")
    return _declares_packages(project) and not install_path.is_dir()


def _declares_packages(project: Path) -> bool:
    for name in ("packages.yml", "dependencies.yml"):
        path = project / name
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                return True  # let dbt deps report the problem
            if isinstance(loaded, dict) and loaded.get("packages"):
                return True
    return False


def refuse_downloads(checkout: Checkout) -> None:
    """TransformRefused if ``dbt deps`` would fetch anything over the network."""
    from pudato.backends.transform import TransformRefused

    remote = downloaded_packages(checkout.path)
    if remote:
        raise TransformRefused(
            f"the project at {checkout.sha[:12]} declares packages fetched over the network "
            f"({', '.join(remote[:5])}); dbt deps downloads only with "
            "PUDATO_TRANSFORM__ALLOW_PACKAGE_DOWNLOADS=true (local: packages need nothing)",
            packages=remote[:20],
            logic_version=checkout.sha,
        )


def downloaded_packages(project: Path) -> list[str]:
    """The packages ``dbt deps`` would fetch over the network (hub, git, tarball), as declared.

    Only ``local:`` packages (a folder of the repository) need no network. A tarball
    URL is any URL, the cloud's metadata service included, fetched from the worker.
    """
    found: list[str] = []
    for name in ("packages.yml", "dependencies.yml"):
        path = project / name
        try:
            loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
        except yaml.YAMLError:
            continue  # dbt deps reports it
        entries = (loaded.get("packages") or []) if isinstance(loaded, dict) else []
        for entry in entries:
            if isinstance(entry, dict) and "local" not in entry:
                sources = [str(entry[key]) for key in ("package", "git", "tarball", "private") if key in entry]
                found.append((sources or ["?"])[0][:200])
    return found


def package_lock(project: Path) -> str | None:
    """The sha256 of ``package-lock.yml``, recorded with every step."""
    lock = project / "package-lock.yml"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None


def common_args(
    project: Path, profile: str, target: str, log_path: Path, dbt_vars: dict[str, Any], target_path: Path | None
) -> list[str]:
    """The arguments every dbt command of a step shares; ``target_path`` None leaves dbt's (for ``deps``)."""
    args = [
        "--project-dir", str(project), "--profile", profile, "--target", target, "--log-path", str(log_path),
        "--vars", json.dumps(dbt_vars, sort_keys=True, default=str), *_FLAGS,
    ]  # fmt: skip
    if target_path is not None:
        args += ["--target-path", str(target_path), "--partial-parse"]
    return args


def selection(select: list[str], exclude: list[str], full_refresh: bool) -> list[str]:
    args: list[str] = []
    if select:
        args += ["--select", *select]
    if exclude:
        args += ["--exclude", *exclude]
    if full_refresh:
        args.append("--full-refresh")
    return args


@contextmanager
def work_lock(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock: worker processes on the same commit share its work folder (target/, partial parse)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
