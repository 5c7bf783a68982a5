"""SNS limits: a Result too large for one message is slimmed; batches stay under 256 KiB."""

from __future__ import annotations

import json

from pudato.fanout import _MESSAGE_MAX, fit_for_sns
from pudato.protocol import ExecutionRecord, Result, utcnow
from pudato.sns_batch import batches as sns_batches
from pudato.sns_batch import string_attributes


def _result(rows: int) -> Result:
    now = utcnow()
    return Result(job_id="j", step_id="s", handler="query", action="run", status="succeeded", started_at=now,
                  finished_at=now, data={"rows": [["x" * 100] for _ in range(rows)], "columns": ["c"]},
                  executions=[ExecutionRecord(engine="duckdb", statement="select 1", started_at=now, duration_ms=1)])


def test_small_results_are_sent_whole():
    body = fit_for_sns(_result(10))
    assert json.loads(body)["data"]["rows"][0] == ["x" * 100]


def test_large_results_are_slimmed_to_fit():
    body = fit_for_sns(_result(5000))
    assert len(body.encode()) <= _MESSAGE_MAX
    decoded = json.loads(body)
    assert decoded["data"]["keys"] == ["columns", "rows"]
    assert decoded["step_id"] == "s"


def test_batches_respect_count_and_size():
    small = [("a" * 100, string_attributes({"type": "result"}))] * 25
    assert [len(b) for b in sns_batches(small)] == [10, 10, 5]
    big = [("b" * 100_000, None)] * 5
    batches = sns_batches(big)
    assert all(sum(len(e["Message"]) for e in b) <= _MESSAGE_MAX for b in batches)
    assert sum(len(b) for b in batches) == 5
    assert all([e["Id"] for e in b] == [str(i) for i in range(len(b))] for b in batches)
