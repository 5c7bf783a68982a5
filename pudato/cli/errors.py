"""The ``pudato`` command's one error handler: every error is one line, ``--debug`` adds the traceback.

A usage mistake, a setting that is wrong, a service that does not answer or a bug
all end the same way: ``Error: …`` on one line of stderr and exit 1 (2 for a usage
mistake, as click has it). Multi-line messages (a driver's, a subprocess's) are
folded onto that line, so a process manager's log keeps them together.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable

import click
import typer

# typer (pinned) parses with a copy of click of its own, whose errors are not click's.
from typer._click.exceptions import ClickException as _TyperClickException
from typer._click.exceptions import UsageError as _TyperUsageError

from pudato.errors import PudatoError

_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)
_USAGE_ERRORS = (click.UsageError, _TyperUsageError)
_CLICK_ERRORS = (click.ClickException, _TyperClickException)


def one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _explain(exc: BaseException) -> str:
    if isinstance(exc, (PudatoError, TimeoutError)):
        return one_line(str(exc))
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError):
        reason = one_line(str(getattr(exc, "orig", None) or exc))
        return (f"the registry database failed: {reason} "
                "(is PUDATO_REGISTRY__URL right, and has `pudato registry upgrade` run?)")
    return f"{type(exc).__name__}: {one_line(str(exc))} (--debug shows the traceback)"


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    typer.echo(f"Error: {message}", err=True)
    sys.exit(code)


def run(app: Callable[..., object], debug: Callable[[], bool]) -> None:
    """Run the click app, turning whatever it raises into one line (and an exit code)."""
    try:
        # Without standalone mode, a command's `raise typer.Exit(n)` comes back as the return value.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _USAGE_ERRORS as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(one_line(exc.format_message()) + where, exc.exit_code, debug())
    except _CLICK_ERRORS as exc:
        _fail(one_line(exc.format_message()), exc.exit_code, debug())
    except _ABORTS:
        sys.exit(130)
    except Exception as exc:
        _fail(_explain(exc), 1, debug())
