"""A step's deadline: how long the running step may still take.

The worker sets it from its queue's soft time limit (``step_deadline``); an
engine that runs long statements in native code, where Celery's soft limit
cannot reach, asks :func:`remaining` and interrupts itself when it runs out
(the warehouse session does, with DuckDB's ``interrupt``). Plain Python, no
Celery: it is per thread, and nothing is set outside a worker's task.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pudato.errors import LimitExceeded

_state = threading.local()


@contextmanager
def step_deadline(limit_s: float | None, setting: str = "", ahead_s: float = 0.0) -> Iterator[None]:
    """Within this block, the step must finish in ``limit_s`` seconds (None: no limit).

    ``ahead_s``: the deadline falls that much earlier than the limit it names. The worker
    uses it to interrupt DuckDB just before Celery's soft limit signals the process: a
    signal and an interrupt arriving together can leave DuckDB waiting on itself.
    """
    saved = getattr(_state, "deadline", None)
    _state.deadline = None if limit_s is None else (time.monotonic() + limit_s - ahead_s, limit_s, setting)
    try:
        yield
    finally:
        _state.deadline = saved


def remaining() -> float | None:
    """Seconds left before the running step's deadline, or None without one."""
    deadline = getattr(_state, "deadline", None)
    return None if deadline is None else deadline[0] - time.monotonic()


def exceeded(what: str = "the step") -> LimitExceeded:
    """The error for a step stopped at its deadline, naming the limit and where it is set."""
    deadline = getattr(_state, "deadline", None)
    limit, setting = (deadline[1], deadline[2]) if deadline else (None, "")
    where = f" (set by {setting})" if setting else ""
    return LimitExceeded(f"{what} ran past the step's time limit of {limit:g} s and was interrupted{where}"
                             if limit is not None else f"{what} ran past the step's time limit", limit_s=limit)


@contextmanager
def interrupt_at_deadline(interrupt: Callable[[], object]) -> Iterator[None]:
    """Call ``interrupt`` (from another thread) if the block is still running at the deadline."""
    left = remaining()
    if left is None:
        yield
        return
    if left <= 0:
        raise exceeded("the statement")
    timer = threading.Timer(left, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
