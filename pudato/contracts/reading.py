"""Reading contracts from the logic repository, at the commit a job is pinned to.

A contract lives beside the pipelines, ``datasets/<name>.yml``. It is read from
the same clean checkout per SHA the transform handler uses
(:mod:`pudato.backends.logic`), so a rerun at a recorded SHA checks its data
against the contract as it was then.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from pudato.backends.logic import LogicRepository, is_sha
from pudato.contracts.model import Contract
from pudato.errors import InvalidCommand, NotFound
from pudato.handlers.base import describe_validation_error

CONTRACT_DIR = "datasets"
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_MAX_BYTES = 1 << 20


def contract_path(checkout: Path, name: str) -> Path | None:
    """The contract file for ``name`` in a checkout, or None when it has none."""
    if not NAME.match(name) or ".." in name:
        raise InvalidCommand(f"contract name {name[:80]!r} is not allowed: use letters, digits, '_', '.' and '-'")
    for suffix in (".yml", ".yaml"):
        path = checkout / CONTRACT_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def parse_contract(text: str, name: str, where: str) -> Contract:
    """A contract from YAML text; ``where`` names the file in errors."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidCommand(f"contract {where} is not valid YAML: {exc}", contract=name) from None
    if not isinstance(document, dict):
        raise InvalidCommand(f"contract {where} must be a mapping", contract=name)
    document.setdefault("name", name)
    try:
        return Contract.model_validate(document)
    except ValidationError as exc:
        raise InvalidCommand(describe_validation_error(exc, f"contract {where}"), contract=name) from None


def read_contract(logic: LogicRepository, repo: str, sha: str, name: str, required: bool) -> Contract | None:
    """The contract ``name`` at commit ``sha`` of ``repo``; None if absent and not ``required``."""
    if not is_sha(sha):
        raise InvalidCommand(f"logic_version {sha[:80]!r} must be a full 40-hex commit SHA", logic_version=sha[:80])
    checkout = logic.checkout(repo, sha.lower())
    path = contract_path(checkout.path, name)
    if path is None:
        if required:
            raise NotFound(
                f"no contract {CONTRACT_DIR}/{name}.yml in {repo} at {sha[:12]}", contract=name, logic_version=sha
            )
        return None
    if path.stat().st_size > _MAX_BYTES:
        raise InvalidCommand(f"contract {CONTRACT_DIR}/{path.name} is over {_MAX_BYTES} bytes", contract=name)
    where = f"{CONTRACT_DIR}/{path.name}"
    contract = parse_contract(path.read_text(encoding="utf-8"), name, where)
    return contract.model_copy(update={"source": {"path": where, "logic_version": checkout.sha}})
