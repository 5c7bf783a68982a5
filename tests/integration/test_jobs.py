"""Jobs through real SQS (moto), real workers, and the PostgreSQL registry."""

from __future__ import annotations

import pytest

from pudato import jobs

pytestmark = pytest.mark.integration

CSV_A = "code,name,amount\n01,Aging,10\n02,Animal Services,20\n"
CSV_B = "code,budget\n01,100\n02,200\n03,300\n"


def _same(ref_a: dict, ref_b: dict) -> bool:
    return (ref_a["namespace"], ref_a["name"]) == (ref_b["namespace"], ref_b["name"])


def test_each_handler_runs_only_on_its_own_queue(stack):
    commands = {
        "storage": jobs.step("storage", "list"),
        "table": jobs.step("table", "list"),
        "query": jobs.step("query", "run", sql="select 42 as answer"),
        "catalog": jobs.step("catalog", "list"),
        "transform": jobs.step("transform", "ping"),
    }
    submitted = {handler: jobs.submit(step) for handler, step in commands.items()}
    for handler, job in submitted.items():
        record = jobs.wait(job.job_id, timeout=60)
        (step,) = record["steps"]
        assert step["status"] == "succeeded", step["error"]
        assert step["worker"].startswith(f"{handler}@"), (handler, step["worker"])


def test_three_step_chain_records_inputs_outputs_and_timings(stack):
    job = jobs.submit(
        jobs.chain(
            jobs.step("storage", "put", name="store", key="chain/a.csv", content=CSV_A),
            jobs.step("table", "load", name="load", table="chain_a", key="chain/a.csv", all_varchar=True),
            jobs.step("query", "run", name="query", sql="select code, name from chain_a order by code"),
        ),
        name="chain",
    )
    record = jobs.wait(job.job_id, timeout=90)
    assert record["status"] == "succeeded"
    store, load, query = record["steps"]
    for step in (store, load, query):
        assert step["status"] == "succeeded"
        assert step["started_at"]
        assert step["finished_at"]
        assert step["duration_ms"] >= 0
        assert step["job_id"] == job.job_id
    assert store["outputs"][0]["namespace"] == "s3://pudato-test"
    assert _same(store["outputs"][0], load["inputs"][0])
    assert store["outputs"][0]["facets"]["sha256"] == load["inputs"][0]["facets"]["sha256"]
    assert _same(load["outputs"][0], query["inputs"][0])
    assert load["outputs"][0]["facets"]["rows"] == 2
    assert query["data"]["rows"] == [["01", "Aging"], ["02", "Animal Services"]]
    assert query["executions"][0]["statement"].startswith("select code")


def test_chord_loads_in_parallel_then_joins(stack):
    storage = stack.client("s3")
    storage.put_object(Bucket="pudato-test", Key="chord/a.csv", Body=CSV_A.encode())
    storage.put_object(Bucket="pudato-test", Key="chord/b.csv", Body=CSV_B.encode())
    job = jobs.submit(
        jobs.chord(
            [
                jobs.step("table", "load", table="chord_a", key="chord/a.csv", all_varchar=True),
                jobs.step("table", "load", table="chord_b", key="chord/b.csv", all_varchar=True),
            ],
            jobs.step(
                "query", "run",
                sql="select a.name, b.budget from chord_a a join chord_b b using (code) order by a.code",
            ),
        ),
        name="chord",
    )
    record = jobs.wait(job.job_id, timeout=90)
    assert record["status"] == "succeeded", record
    load_a, load_b, query = record["steps"]
    assert {ref["name"] for ref in query["inputs"]} == {"main.chord_a", "main.chord_b"}
    assert any(_same(load_a["outputs"][0], ref) for ref in query["inputs"])
    assert any(_same(load_b["outputs"][0], ref) for ref in query["inputs"])
    assert query["data"]["rows"] == [["Aging", "100"], ["Animal Services", "200"]]


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (jobs.step("table", "load", table="never", key="does/not/exist.csv"), "does/not/exist.csv"),
        (jobs.step("query", "run", sql="select * from no_such_table"), "no_such_table"),
        (jobs.step("query", "run", sql="selec 1"), "syntax error"),
    ],
    ids=["missing-object", "unknown-table", "bad-sql"],
)
def test_failing_step_fails_the_job_and_the_worker_keeps_going(stack, first, expected):
    job = jobs.submit(jobs.chain(first, jobs.step("catalog", "list")))
    record = jobs.wait(job.job_id, timeout=60)
    assert record["status"] == "failed"
    failed, never_ran = record["steps"]
    assert failed["status"] == "failed"
    assert expected in failed["error"]["message"]
    assert never_ran["status"] == "pending"
    again = jobs.wait(jobs.submit(jobs.step(first.handler, "list" if first.handler == "table" else "run",
                                            **({} if first.handler == "table" else {"sql": "select 1"}))).job_id)
    assert again["status"] == "succeeded"


def test_a_group_job_rolls_up_from_parallel_steps(stack):
    job = jobs.submit(jobs.group(jobs.step("storage", "ping"), jobs.step("catalog", "ping"),
                                 jobs.step("table", "ping")), name="group")
    record = jobs.wait(job.job_id, timeout=60)
    assert record["status"] == "succeeded"
    assert sorted(s["worker"].split("@")[0] for s in record["steps"]) == ["catalog", "storage", "table"]
    assert {s["job_id"] for s in record["steps"]} == {job.job_id}
