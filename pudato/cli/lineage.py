"""``pudato lineage``: a dataset's lineage as text, JSON, Mermaid or DOT, today or as of a job or version."""

from __future__ import annotations

from typing import cast

import typer

FORMATS = ("text", "json", "mermaid", "dot")


def lineage(
    dataset: str = typer.Argument(..., help="A URI (s3://bucket/key, ducklake://lake/main.t), a bare name, "
                                            "or a namespace followed by NAME."),
    name: str | None = typer.Argument(None, help="The name, when DATASET is a namespace."),
    downstream: bool = typer.Option(False, "--downstream", help="What was made from it (default: what made it)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text | json | mermaid | dot"),
    depth: int = typer.Option(20, "--depth", min=1, max=100, help="How many hops to follow."),
    as_of: str | None = typer.Option(None, "--as-of", help="A job id or logic SHA: the versions that job read, "
                                                         "upstream (which release of a file fed this table)."),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """Trace a dataset, e.g. `pudato lineage main.fct_gf_revenue --format mermaid`."""
    from pudato.lineage.formats import Format, render
    from pudato.lineage.graph import lineage_graph, resolve
    from pudato.registry.repository import Registry
    from pudato.settings import get_settings

    fmt = "json" if as_json else fmt
    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}", param_hint="--format")
    if as_of is not None and downstream:
        raise typer.BadParameter("--as-of traces upstream only (the versions a job read)", param_hint="--as-of")
    registry = Registry(get_settings().registry.url)
    namespace, dataset_name = resolve(registry, dataset, name)
    graph = lineage_graph(registry, namespace, dataset_name, "downstream" if downstream else "upstream",
                          depth, as_of=as_of)
    typer.echo(render(graph, cast(Format, fmt)))  # checked against FORMATS above
