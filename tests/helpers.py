"""Plain helpers shared by the test files (``from helpers import git, wait_for``).

pytest puts ``tests/`` on ``sys.path`` because ``tests/conftest.py`` lives there, so every
test file can import this module; fixtures stay in the conftest files.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

AUTHOR = ("Analyst", "analyst@example.org")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    A pass or fail waits on the condition, never on a fixed sleep: on a busy machine the
    condition simply takes longer, so give ``timeout`` room to spare.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} (not within {timeout:g}s; last: {value!r})")
        time.sleep(interval)


def git(repo: Path | str, *args: str, author: tuple[str, str] = AUTHOR) -> str:
    """Run git in ``repo`` as ``author`` (no global git config needed); returns its stripped stdout."""
    name, email = author
    command = ["git", "-C", str(repo), "-c", f"user.name={name}", "-c", f"user.email={email}", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()
