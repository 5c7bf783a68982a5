"""``pudato flower``: Flower, refused without a login (see pudato/flower.py)."""

from __future__ import annotations

import os

import typer


def flower(
    context: typer.Context,
    address: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 only inside a container)."),
    port: int = typer.Option(5555, help="Port to listen on."),
    grace: float = typer.Option(2.0, help="Seconds Flower gets to stop on SIGTERM before SIGKILL."),
) -> None:
    """Run Flower on the Pudato app, with basic auth from PUDATO_FLOWER__BASIC_AUTH. Extra args go to Flower
    (--auth=REGEX with Flower's FLOWER_OAUTH2_* variables: its OAuth login instead)."""
    from pudato import flower as login
    from pudato.devstack.processes import run_bounded, say
    from pudato.settings import get_settings

    extra = list(context.args)
    oauth = any(arg == "--auth" or (arg.startswith("--auth=") and arg != "--auth=") for arg in extra)  # OAuth
    credentials = login.basic_auth(get_settings().flower, oauth=oauth)
    if credentials is None and oauth:
        os.environ.pop(login.FLOWER_AUTH_VARIABLE, None)
    elif credentials is None:
        say("Flower runs WITHOUT a login (PUDATO_FLOWER__ALLOW_UNAUTHENTICATED=true): anyone who reaches "
            f"{address}:{port} sees every task's arguments and results")
        os.environ.pop(login.FLOWER_AUTH_VARIABLE, None)
    else:
        # Flower's own variable, inherited by the child alone: never on a command line.
        os.environ[login.FLOWER_AUTH_VARIABLE] = credentials
    raise typer.Exit(run_bounded(login.command(address, port, extra), grace))
