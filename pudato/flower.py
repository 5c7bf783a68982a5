"""Flower with a login: what ``pudato flower`` checks before it starts Flower.

Flower's pages show every task's arguments and result: a command's SQL, its payload
and the rows it returned. So Flower never starts open by accident: it needs
``PUDATO_FLOWER__BASIC_AUTH`` (``user:password``, several comma-separated), or
``PUDATO_FLOWER__ALLOW_UNAUTHENTICATED=true`` to run it open on purpose (behind a
proxy that authenticates, say), or Flower's own OAuth (``pudato flower --auth=REGEX`` and
its ``FLOWER_OAUTH2_*`` variables).

The credentials reach Flower through its own ``FLOWER_BASIC_AUTH`` variable in the
child's environment, never on its command line, where any local user could read
them (``ps``).
"""

from __future__ import annotations

import sys

from pudato.errors import ConfigurationError
from pudato.settings import FlowerSettings

FLOWER_AUTH_VARIABLE = "FLOWER_BASIC_AUTH"  # read by Flower itself (flower/command.py, apply_env_options)
HINT = (
    "set PUDATO_FLOWER__BASIC_AUTH=user:password in .env (`pudato local env` writes a random one), "
    "or PUDATO_FLOWER__ALLOW_UNAUTHENTICATED=true to run Flower open on purpose"
)


def basic_auth(settings: FlowerSettings, oauth: bool = False) -> str | None:
    """The ``user:password[,user:password]`` Flower gets; None when running open was chosen, or
    when Flower's own OAuth (``--auth``, with its ``FLOWER_OAUTH2_*`` settings) guards it instead."""
    value = settings.basic_auth.get_secret_value().strip() if settings.basic_auth else ""
    if not value:
        if settings.allow_unauthenticated or oauth:
            return None
        raise ConfigurationError(f"Flower has no login: {HINT}", field="flower__basic_auth")
    logins = [login.strip() for login in value.split(",")]
    for position, login in enumerate(logins, start=1):
        user, colon, password = login.partition(":")
        if not (colon and user and password):
            # Never echo the value: it is a secret, and a malformed one is most likely a real password.
            raise ConfigurationError(
                f"PUDATO_FLOWER__BASIC_AUTH login {position} is not user:password with both parts non-empty",
                field="flower__basic_auth",
            )
    return ",".join(logins)


def command(address: str, port: int, extra: list[str]) -> list[str]:
    """Flower on the Pudato app; task events come from the workers (monitoring), not from Flower."""
    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "flower",
        f"--address={address}", f"--port={port}", "--enable_events=False", *extra,
    ]
