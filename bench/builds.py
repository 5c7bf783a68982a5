"""Timing dbt build steps through the TransformHandler, for the benches that compare two runners."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command


def build_step(handler: TransformHandler, project: Path, sha: str, job: str) -> float:
    """Seconds one whole build step takes (checkout check, profile, dbt, artifacts, versions)."""
    command = Command(handler="transform", action="build", job_id=job, logic_repo=str(project), logic_version=sha)
    start = time.perf_counter()
    result = handler.execute(command)
    elapsed = time.perf_counter() - start
    if result.status != "succeeded":
        raise SystemExit(f"build failed ({job}): {result.error}")
    return elapsed


def compare(handlers: dict[str, TransformHandler], project: Path, sha: str,
            warm_runs: int) -> tuple[dict[str, float], dict[str, list[float]]]:  # fmt: skip
    """Each handler's first build, then ``warm_runs`` warm ones alternating, so noise falls on all; closes them."""
    first = {name: build_step(handler, project, sha, f"{name}-first") for name, handler in handlers.items()}
    warm: dict[str, list[float]] = {name: [] for name in handlers}
    for run in range(warm_runs):
        order = list(handlers) if run % 2 == 0 else list(reversed(handlers))
        for name in order:
            warm[name].append(build_step(handlers[name], project, sha, f"{name}-{run}"))
    for handler in handlers.values():
        handler.runner.close()
    return first, warm


def report(first: dict[str, float], warm: dict[str, list[float]], width: int) -> dict[str, float]:
    """Print each runner's first and warm times; returns the warm medians."""
    median = {name: statistics.median(times) for name, times in warm.items()}
    for name, times in warm.items():
        print(f"  {name:<{width}}: first {first[name]:.2f} s, warm median {median[name]:.3f} s "
              f"{[round(t, 3) for t in times]}")  # fmt: skip
    return median
