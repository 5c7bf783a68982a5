"""`pudato jobs watch`: a live view of a job, driven by a SQLite registry that a thread advances."""

from __future__ import annotations

import io
import itertools
import re
import threading
import time
from pathlib import Path

import pytest

from pudato.errors import NotFound
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry, StepPlan, StepUpdate
from pudato.watch import progress_bar, render, watch

STEPS = [("storage", "put"), ("table", "load"), ("query", "run")]


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return Registry(url)


def _job(registry: Registry, job_id: str = "job-1", name: str | None = "load a") -> list[str]:
    step_ids = [f"{job_id}-step-{i}" for i in range(len(STEPS))]
    registry.create_job(
        job_id,
        [StepPlan(step_id=sid, handler=h, action=a, position=i) for i, (sid, (h, a)) in
         enumerate(zip(step_ids, STEPS, strict=True))],
        name=name,
    )
    return step_ids


def _advance(registry: Registry, job_id: str, step_ids: list[str], out: io.StringIO | None = None,
             fail_last: bool = False, pause: float = 0.05) -> threading.Thread:
    """Run the steps one after the other. With ``out``, each change waits until the watcher has shown it."""

    def shown(number: int, status: str) -> None:
        handler, action = STEPS[number - 1]
        line = re.compile(rf"{number}\. {handler}\.{action}\s+{status}")
        deadline = time.monotonic() + 60
        while out is not None and time.monotonic() < deadline and not line.search(out.getvalue()):
            time.sleep(0.01)

    def run() -> None:
        shown(1, "pending")
        for i, (sid, (handler, action)) in enumerate(zip(step_ids, STEPS, strict=True)):
            time.sleep(pause)
            registry.apply(StepUpdate(event="started", step_id=sid, job_id=job_id, handler=handler, action=action))
            shown(i + 1, "running")
            time.sleep(pause)
            status = "failed" if fail_last and i == len(step_ids) - 1 else "succeeded"
            registry.apply(StepUpdate(event="finished", step_id=sid, job_id=job_id, handler=handler, action=action,
                                      status=status, duration_ms=1234.0 if i == 1 else 12.0,
                                      error={"message": "boom"} if status == "failed" else None))
            shown(i + 1, status)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_prints_each_change_in_order_and_returns_the_finished_job(registry: Registry) -> None:
    step_ids = _job(registry)
    out = io.StringIO()
    thread = _advance(registry, "job-1", step_ids, out)

    job = watch(registry, "job-1", timeout=30, out=out, poll_s=0.02)
    thread.join(5)

    assert job["status"] == "succeeded"
    assert [s["status"] for s in job["steps"]] == ["succeeded"] * 3
    text = out.getvalue()
    assert "\x1b[" not in text  # not a terminal: plain lines, no cursor movement
    lines = text.splitlines()
    bars = [line for line in lines if line.startswith("[")]
    assert bars == [
        "[--------------------] 0/3 steps",
        "[######--------------] 1/3 steps",
        "[#############-------] 2/3 steps",
        "[####################] 3/3 steps",
    ]
    headers = [line for line in lines if line.startswith("job ")]
    assert headers == ["job job-1 load a pending", "job job-1 load a running", "job job-1 load a succeeded"]
    # Each step is shown pending, running, then succeeded with its duration, in that order.
    for number, (handler, action) in enumerate(STEPS, 1):
        mine = [line for line in lines if line.startswith(f"  {number}. {handler}.{action}")]
        assert [line.split()[2] for line in mine] == ["pending", "running", "succeeded"], mine
    assert lines[-1].startswith("  3. query.run")
    assert lines[-1].endswith("12 ms")
    assert any(line.startswith("  2. table.load") and line.endswith("1.2 s") for line in lines)
    # The last bar comes after the last step started, and nothing is printed twice in a row.
    assert lines.index("[####################] 3/3 steps") > lines.index(
        next(line for line in lines if "query.run" in line and "running" in line)
    )
    assert all(a != b for a, b in itertools.pairwise(lines))


def test_a_failed_step_ends_the_watch_with_the_failed_job(registry: Registry) -> None:
    step_ids = _job(registry, "job-2", name=None)
    out = io.StringIO()
    thread = _advance(registry, "job-2", step_ids, out, fail_last=True)

    job = watch(registry, "job-2", timeout=30, out=out, poll_s=0.02)
    thread.join(5)

    assert job["status"] == "failed"
    lines = out.getvalue().splitlines()
    assert lines[-1].split()[2] == "failed"
    assert "job job-2 failed" in lines  # no name: the header is id and status
    assert "[####################] 3/3 steps" in lines  # failed steps count as done


def test_on_a_terminal_the_block_is_redrawn_in_place(registry: Registry) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    step_ids = _job(registry, "job-3")
    out = Terminal()
    thread = _advance(registry, "job-3", step_ids, out)

    job = watch(registry, "job-3", timeout=30, out=out, poll_s=0.02)
    thread.join(5)

    assert job["status"] == "succeeded"
    text = out.getvalue()
    block = 2 + len(STEPS)
    assert f"\x1b[{block}A" in text  # back up over the header, the bar and the steps
    assert "\x1b[2K" in text
    assert text.index("0/3 steps") < text.index("1/3 steps") < text.index("2/3 steps") < text.index("3/3 steps")
    final = text.rsplit(f"\x1b[{block}A", 1)[-1]
    assert final.count("\n") == block
    assert "3/3 steps" in final
    assert "succeeded" in final


def test_an_unknown_job_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound):
        watch(registry, "no-such-job", timeout=1, out=io.StringIO(), poll_s=0.01)


def test_a_job_that_does_not_finish_times_out(registry: Registry) -> None:
    _job(registry, "job-4")
    out = io.StringIO()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="job-4"):
        watch(registry, "job-4", timeout=0.3, out=out, poll_s=0.05)
    # It gave up rather than hung: a bound far above the 0.3 s timeout, so a busy machine cannot trip it.
    assert time.monotonic() - started < 30
    assert out.getvalue().splitlines()[:2] == ["job job-4 load a pending", "[--------------------] 0/3 steps"]


def test_render_and_bar() -> None:
    assert progress_bar(3, 6) == "[##########----------] 3/6 steps"
    assert progress_bar(0, 0) == "[--------------------] 0/0 steps"
    job = {
        "id": "j",
        "name": None,
        "status": "running",
        "step_count": 2,
        "steps": [
            {"handler": "storage", "action": "put", "name": "raw", "status": "succeeded", "duration_ms": 65_000.0}
        ],
    }
    lines = render(job)
    assert lines[0] == "job j running"
    assert lines[1] == "[##########----------] 1/2 steps"
    assert lines[2].startswith("  1. storage.put (raw)")
    assert lines[2].endswith("succeeded  1 min 5 s")
