"""``pudato datasets``: datasets and their versions."""

from __future__ import annotations

import json

import typer

datasets_app = typer.Typer(no_args_is_help=True, help="Datasets and their versions.")


@datasets_app.command("history")
def history(
    name: str = typer.Argument(..., help="A dataset: s3://bucket/key, duckdb://db/schema.table, or a bare name."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every version of a dataset, oldest first, and the job, step and SHA that wrote each."""
    from pudato import versions
    from pudato.registry.repository import Registry
    from pudato.settings import get_settings

    rows = versions.history(Registry(get_settings().registry.url), name)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    typer.echo(versions.format_history(rows) or f"no recorded versions of {name}")


@datasets_app.command("drift")
def drift(
    name: str = typer.Argument(..., help="A table: schema.table, or its full name (ducklake://lake/main.t)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every release loaded into a dataset, oldest first: columns added, removed, renamed, retyped; rows; rejects."""
    from pudato.registry.drift import drift_history, format_drift
    from pudato.settings import get_settings

    rows = drift_history(get_settings().registry.url, name)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    typer.echo(format_drift(rows) or f"no recorded releases of {name}")
