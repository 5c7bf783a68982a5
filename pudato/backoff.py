"""Exponential backoff with jitter: the one waiting rule of every retry loop.

Jitter spreads out processes that all failed on the same cause (one writer holding
the warehouse, one registry outage), so that they do not all come back at once.
"""

from __future__ import annotations

import random
import time


def delay_for(attempt: int, initial_s: float, max_s: float, jitter: tuple[float, float] = (0.5, 1.5)) -> float:
    """The pause before retry number ``attempt`` (1 for the first): doubling from ``initial_s``, capped, jittered."""
    return min(initial_s * 2.0 ** min(attempt - 1, 30), max_s) * random.uniform(*jitter)


class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s``, each jittered, until ``timeout_s`` runs out.

    ``timeout_s=None`` waits for ever (a drain that must not drop what it holds).
    """

    def __init__(self, initial_s: float = 0.1, max_s: float = 2.0, timeout_s: float | None = None,
                 jitter: tuple[float, float] = (0.5, 1.5)) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempts = 0
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s

    @property
    def remaining_s(self) -> float:
        return float("inf") if self._deadline is None else self._deadline - time.monotonic()

    def next_delay(self) -> float | None:
        """The next pause (counting an attempt), or None once the deadline has passed."""
        self.attempts += 1
        remaining = self.remaining_s
        if remaining <= 0:
            return None
        return min(remaining, delay_for(self.attempts, self.initial_s, self.max_s, self.jitter))

    def wait(self) -> bool:
        """Sleep the next pause; False, without sleeping, once the deadline has passed."""
        delay = self.next_delay()
        if delay is None:
            return False
        time.sleep(delay)
        return True
