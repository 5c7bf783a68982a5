"""``pudato local env``: a ``.env`` made from ``.env.example``, with a fresh secret wherever one is left blank.

The example carries no password, so that none is ever shared between installs: Flower's
login and compose's PostgreSQL password are generated here, once, into a ``.env`` only
its owner can read.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pudato.errors import ConfigurationError

# Settings that must not stay blank, and how to make a value for each.
GENERATED: dict[str, Callable[[], str]] = {
    "PUDATO_FLOWER__BASIC_AUTH": lambda: f"admin:{secrets.token_urlsafe(18)}",
    # URL-safe: it goes into PUDATO_REGISTRY__URL in docker-compose.yml as it is.
    "STACK_POSTGRES_PASSWORD": lambda: secrets.token_hex(16),
}


def write_env(example: Path, target: Path) -> list[str]:
    """Write ``target`` from ``example``, each blank entry of :data:`GENERATED` filled; the names filled."""
    if target.exists():
        raise ConfigurationError(f"{target} exists already: edit it, or move it away first", path=str(target))
    if not example.is_file():
        raise ConfigurationError(f"no {example} to start from (run this in the checkout)", path=str(example))
    filled, lines = [], []
    for line in example.read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and name in GENERATED and not value.strip():
            line = f"{name}={GENERATED[name]()}"
            filled.append(name)
        lines.append(line)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # secrets: the owner's alone
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return filled
