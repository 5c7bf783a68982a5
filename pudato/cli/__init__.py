"""The ``pudato`` command: a thin layer over the library, with one error handler.

Errors print as one line, ``Error: …``, and exit 1; ``--debug`` shows the traceback
(pudato/cli/errors.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from pudato.cli.datasets import datasets_app
from pudato.cli.errors import run as run_cli
from pudato.cli.flower import flower
from pudato.cli.lineage import lineage
from pudato.cli.local import local_app

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
infra_app = typer.Typer(no_args_is_help=True, help="AWS resources: queues, dead-letter queues, topics, bucket.")
registry_app = typer.Typer(no_args_is_help=True, help="The registry database.")
jobs_app = typer.Typer(no_args_is_help=True, help="Jobs and their steps.")
app.add_typer(infra_app, name="infra")
app.add_typer(registry_app, name="registry")
app.add_typer(jobs_app, name="jobs")
worker_app = typer.Typer(no_args_is_help=True, help="Worker health.")
app.add_typer(worker_app, name="worker")
schedules_app = typer.Typer(no_args_is_help=True, help="Beat schedules, kept in the registry.")
app.add_typer(schedules_app, name="schedules")
app.add_typer(local_app, name="local")
dlq_app = typer.Typer(no_args_is_help=True, help="Dead-letter queues: look at them, re-drive them.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(datasets_app, name="datasets")
app.command("flower", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(flower)

_options = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """Pudato: data operations for public-sector data teams."""
    _options["debug"] = debug


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


@infra_app.command("up")
def infra_up(as_json: bool = typer.Option(False, "--json")) -> None:
    """Create every queue, dead-letter queue, topic, subscription and the bucket (idempotent)."""
    from pudato import infra
    from pudato.settings import get_settings

    report = infra.up(get_settings())
    if as_json:
        _print_json(report)
        return
    for name, url in report["queues"].items():
        typer.echo(f"queue  {name:<24} {url}")
    for name, arn in report["topics"].items():
        typer.echo(f"topic  {name:<24} {arn}")
    typer.echo(f"bucket {report['bucket']}")


@infra_app.command("wait")
def infra_wait(timeout: float = typer.Option(120.0, help="Seconds to wait.")) -> None:
    """Wait until every queue exists (for process managers that start workers beside infra up)."""
    import time

    from pudato import aws, infra
    from pudato.settings import get_settings

    settings = get_settings()
    names = [spec.name for spec in infra.declared_queues(settings)]
    deadline = time.monotonic() + timeout
    while True:
        try:
            sqs = aws.client("sqs", settings.aws)
            for name in names:
                sqs.get_queue_url(QueueName=name)
            return
        except Exception as exc:  # the endpoint or a queue is not there yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"queues not ready after {timeout:.0f}s: {exc}") from None
            time.sleep(0.5)


@registry_app.command("upgrade")
def registry_upgrade() -> None:
    """Apply the registry's migrations."""
    from pudato.registry.migrate import upgrade
    from pudato.settings import get_settings

    upgrade(get_settings().registry.url)
    typer.echo("registry is up to date")


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """A job's status and its steps, with inputs and outputs."""
    from pudato.registry.repository import Registry
    from pudato.report import format_job, job_document
    from pudato.settings import get_settings

    job = Registry(get_settings().registry.url).job(job_id)
    _print_json(job_document(job)) if as_json else typer.echo(format_job(job))


@jobs_app.command("watch")
def jobs_watch(job_id: str, timeout: float = typer.Option(3600.0, help="Give up after this many seconds.")) -> None:
    """Follow a job's steps live, with a progress bar, until it finishes."""
    from pudato.registry.repository import Registry
    from pudato.settings import get_settings
    from pudato.watch import watch

    job = watch(Registry(get_settings().registry.url), job_id, timeout=timeout)
    if job["status"] != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(limit: int = 20) -> None:
    """The most recent jobs."""
    from pudato.registry.repository import Registry
    from pudato.settings import get_settings

    for job in Registry(get_settings().registry.url).jobs(limit):
        typer.echo(f"{job['id']}  {job['status']:<9} {job['submitted_at']}  {job.get('name') or ''}")


def _follow(job_id: str, wait: bool, as_json: bool, timeout: float) -> None:
    from pudato import jobs
    from pudato.report import format_job, job_document

    if not wait:
        typer.echo(job_id)
        return
    job = jobs.wait(job_id, timeout=timeout)
    _print_json(job_document(job)) if as_json else typer.echo(format_job(job))
    if job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def run(
    pipeline: str,
    repo: str = typer.Option(..., help="The logic repository: a URL or a local path."),
    ref: str = typer.Option("main", help="Branch, tag or SHA; resolved to a SHA now."),
    wait: bool = typer.Option(True, help="Wait for the job and show it."),
    as_json: bool = typer.Option(False, "--json"),
    timeout: float = 600.0,
) -> None:
    """Run a pipeline from the logic repository, every step pinned to one commit."""
    from pudato import pipelines
    from workers.app import app as celery_app

    submitted = pipelines.submit(pipeline, repo, ref, app=celery_app)
    _follow(submitted.job_id, wait, as_json, timeout)


@app.command()
def rerun(
    job_id: str,
    latest: bool = typer.Option(
        False, "--latest", help="Run today's code: the ref's current head, not the recorded SHA."
    ),
    latest_data: bool = typer.Option(
        False, "--latest-data", help="Read today's inputs, not each at its recorded version."
    ),
    wait: bool = typer.Option(True, help="Wait for the job and show it."),
    as_json: bool = typer.Option(False, "--json"),
    timeout: float = 600.0,
) -> None:
    """Run a recorded job again with its recorded parameters, at its recorded SHA, on its inputs as they were."""
    from pudato import pipelines
    from workers.app import app as celery_app

    submitted = pipelines.rerun(job_id, latest=latest, latest_data=latest_data, app=celery_app)
    _follow(submitted.job_id, wait, as_json, timeout)


app.command("lineage")(lineage)


@schedules_app.command("list")
def schedules_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every schedule: when it runs next, when it ran last, whether it is paused."""
    from pudato import schedules
    from pudato.settings import get_settings

    rows = schedules.listing(get_settings().registry.url)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        when = row["cron"] or f"every {row['every_s']:g}s"
        state = "active" if row["enabled"] else "paused"
        typer.echo(
            f"{row['name']:<28} {state:<7} {when:<18} next {row['next_run_at']}  last {row['last_run_at']}"
            f"  runs {row['run_count']}  {json.dumps(row['target'])}"
        )


@schedules_app.command("add")
def schedules_add(
    name: str,
    pipeline: str | None = typer.Option(None, help="A pipeline in the logic repository."),
    repo: str | None = typer.Option(None, help="The logic repository (with --pipeline)."),
    ref: str = typer.Option("main", help="Resolved to its head's SHA at every run."),
    step: str | None = typer.Option(None, help='Or one step as JSON: {"handler": ..., "action": ..., "payload": {}}'),
    cron: str | None = typer.Option(None, help="minute hour day-of-month month day-of-week, in UTC."),
    every: float | None = typer.Option(None, help="An interval in seconds."),
) -> None:
    """Add or change a schedule (run history and pause state are kept)."""
    from pydantic import ValidationError

    from pudato import schedules
    from pudato.errors import InvalidCommand
    from pudato.handlers.base import describe_validation_error
    from pudato.settings import get_settings

    try:
        spec = schedules.ScheduleSpec(
            pipeline=pipeline, repo=repo, ref=ref, step=json.loads(step) if step else None, cron=cron, every_s=every
        )
    except ValidationError as exc:
        raise InvalidCommand(describe_validation_error(exc, "schedule")) from None
    except ValueError as exc:
        raise InvalidCommand(f"--step is not valid JSON: {exc}") from None
    schedules.upsert(get_settings().registry.url, name, spec)
    typer.echo(f"schedule {name} saved")


@schedules_app.command("remove")
def schedules_remove(name: str) -> None:
    """Delete a schedule."""
    from pudato import schedules
    from pudato.settings import get_settings

    schedules.remove(get_settings().registry.url, name)
    typer.echo(f"schedule {name} removed")


@schedules_app.command("pause")
def schedules_pause(name: str) -> None:
    """Stop a schedule from firing until it is resumed."""
    from pudato import schedules
    from pudato.settings import get_settings

    schedules.set_enabled(get_settings().registry.url, name, False)
    typer.echo(f"schedule {name} paused")


@schedules_app.command("resume")
def schedules_resume(name: str) -> None:
    """Let a paused schedule fire again, from its next slot."""
    from pudato import schedules
    from pudato.settings import get_settings

    schedules.set_enabled(get_settings().registry.url, name, True)
    typer.echo(f"schedule {name} resumed")


@worker_app.command("alive")
def worker_alive(hostname: str, max_age: float = typer.Option(30.0, help="Seconds since the last touch.")) -> None:
    """Exit 0 if the worker's liveness file is fresh (a liveness probe), else 1."""
    from workers.liveness import is_alive

    if not is_alive(hostname, max_age):
        typer.echo(f"{hostname}: no liveness touch within {max_age:.0f}s", err=True)
        raise typer.Exit(1)
    typer.echo(f"{hostname}: alive")


@app.command()
def queues(as_json: bool = typer.Option(False, "--json")) -> None:
    """Per queue: messages visible, in flight, delayed, and in its dead-letter queue."""
    from pudato import queues as queue_depths
    from pudato.settings import get_settings

    rows = queue_depths.depths(get_settings())
    if as_json:
        _print_json(rows)
        return
    typer.echo(f"{'queue':<20} {'visible':>8} {'in flight':>10} {'delayed':>8} {'dead':>6}")
    for row in rows:
        typer.echo(
            f"{row['queue']:<20} {row['visible']:>8} {row['in_flight']:>10} {row['delayed']:>8} "
            f"{row['dead_letters']:>6}"
        )


@dlq_app.command("list")
def dlq_list(queue: str, limit: int = 10) -> None:
    """Show the messages in a queue's dead-letter queue (without consuming them)."""
    from pudato import queues as dead
    from pudato.settings import get_settings

    _print_json(dead.dead_letters(get_settings(), queue, limit))


@dlq_app.command("replay")
def dlq_replay(queue: str, limit: int = 1000) -> None:
    """Move a queue's dead letters back onto the queue."""
    from pudato import queues as dead
    from pudato.settings import get_settings

    moved = dead.replay(get_settings(), queue, limit)
    typer.echo(f"moved {moved} message(s) back to {queue}")


@app.command()
def demo(
    as_json: bool = typer.Option(False, "--json", help="Print the job as one JSON document."),
    state_dir: Path | None = typer.Option(None, help="Keep the demo's state here (default: a temp folder)."),
) -> None:
    """Run the sample job end to end: moto, a SQLite registry, one worker per queue."""
    from pudato import demo as sample
    from pudato.report import format_job, format_rows, job_document

    if not as_json:
        typer.echo("starting moto, the registry and a worker per queue …", err=True)
    job = sample.run(state_dir)
    if as_json:
        _print_json(job_document(job))
    else:
        from pudato.lineage import format_trace

        typer.echo(format_job(job))
        query = next((s for s in job["steps"] if s["handler"] == "query"), None)
        if query and query.get("data") and query["data"].get("columns"):
            typer.echo("\n" + format_rows(query["data"]["columns"], query["data"]["rows"]))
        typer.echo("\nlineage of the mart, upstream:\n" + format_trace(job["lineage"], "upstream"))
        typer.echo(f"\nstate kept in {job['state_dir']}")
    if job["status"] != "succeeded":
        raise typer.Exit(1)


def main() -> None:
    run_cli(app, lambda: _options["debug"])
