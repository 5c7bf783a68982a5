"""Follow a job live: a header, a progress bar and one line per step, until it finishes.

On a terminal the block is redrawn in place (ANSI cursor-up and clear-line); into a
file or a pipe each line that changed is printed once, so a log reads as a history::

    job 7f3c… load a running
    [######--------------] 1/3 steps
      1. storage.put            succeeded   12 ms
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from pudato.registry.repository import TERMINAL, Registry

BAR_WIDTH = 20
CURSOR_UP = "\x1b[{}A"
CLEAR_LINE = "\x1b[2K"
CLEAR_BELOW = "\x1b[J"


def watch(
    registry: Registry,
    job_id: str,
    timeout: float = 3600.0,
    out: TextIO = sys.stdout,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Show the job until it succeeded or failed with no step still running; return it.

    Raises :class:`pudato.errors.NotFound` (from the registry) for an unknown job and
    :class:`TimeoutError` when the job is still going after ``timeout`` seconds.
    """
    tty = _is_tty(out)
    deadline = time.monotonic() + timeout
    shown: list[str] = []
    while True:
        job = registry.job(job_id)
        lines = render(job, live=tty)
        if tty:
            _redraw(out, shown, lines)
        else:
            _print_changes(out, shown, lines)
        shown = lines
        if finished(job):
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"job {job_id} did not finish within {timeout:g}s (status {job['status']})")
        time.sleep(min(poll_s, remaining))


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL and all(step["status"] != "running" for step in job["steps"])


def render(job: dict[str, Any], live: bool = False) -> list[str]:
    """The block for one moment: header, progress bar, a line per step.

    ``live`` adds the time a running step has been running so far (for a redrawn
    terminal; a printed log would get a new line at every poll).
    """
    header = " ".join(str(part) for part in ("job", job["id"], job.get("name"), job["status"]) if part)
    total = max(int(job.get("step_count") or 0), len(job["steps"]), 1)
    done = sum(1 for step in job["steps"] if step["status"] in TERMINAL)
    return [header, progress_bar(done, total), *(_step_line(i, s, live) for i, s in enumerate(job["steps"], 1))]


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = min(width, int(width * done / total)) if total else 0
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} steps"


def _step_line(number: int, step: dict[str, Any], live: bool) -> str:
    what = f"{step['handler']}.{step['action']}"
    if step.get("name"):
        what = f"{what} ({step['name']})"
    line = f"  {number}. {what:<32} {step['status']:<10}"
    if step.get("duration_ms") is not None:
        line += f" {format_duration(step['duration_ms'])}"
    elif live and step["status"] == "running" and step.get("started_at"):
        line += f" {format_duration(_elapsed_ms(step['started_at']))} so far"
    return line.rstrip()


def format_duration(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    return f"{minutes:.0f} min {seconds:.0f} s"


def _elapsed_ms(started_at: datetime) -> float:
    if started_at.tzinfo is None:  # SQLite hands datetimes back without their zone; they are UTC
        started_at = started_at.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - started_at).total_seconds() * 1000)


def _is_tty(out: TextIO) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def _redraw(out: TextIO, shown: list[str], lines: list[str]) -> None:
    if lines == shown:
        return
    parts = [CURSOR_UP.format(len(shown))] if shown else []
    parts += [f"\r{CLEAR_LINE}{line}\n" for line in lines]
    if len(shown) > len(lines):
        parts.append(CLEAR_BELOW)
    out.write("".join(parts))
    out.flush()


def _print_changes(out: TextIO, shown: list[str], lines: list[str]) -> None:
    # Lines are compared by position: the header, the bar, then each step in its place.
    changed = [line for i, line in enumerate(lines) if i >= len(shown) or shown[i] != line]
    if changed:
        out.write("".join(f"{line}\n" for line in changed))
        out.flush()
