"""Table loads into the lake: two table-worker processes on two "hosts" against one.

The LA General Fund Revenue files, stored once in (moto) S3, are loaded into
distinct lake tables, repeated: ``LOADS`` loads in one group, first with one
table-worker process (``-c 1``) on host A, then with one on host A and one on
host B (separate state, extension and cache folders; only SQS, S3 and PostgreSQL
shared). Same moto, same PostgreSQL catalog, same job shape. Prints both times and
the speed-up (one host's time / two hosts' time). With the DuckDB file the second
worker would wait on the file lock (about 1x); the lake has none.

    .venv/bin/python bench/warehouse_scaling.py [LOADS] [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import REPO, bench_stack
from pudato import aws, jobs, local
from pudato.demo import DATA, RELEASES

LAKE = {"PUDATO_WAREHOUSE__BACKEND": "ducklake"}


def _hosts(env: dict[str, str], state: Path, count: int) -> list[object]:
    started = []
    for host in "ab"[:count]:
        root = state / f"host-{host}"
        host_env = {
            **env,
            "PUDATO_WORKER__LIVENESS_DIR": str(root / "liveness"),
            "PUDATO_LOGIC__CACHE_DIR": str(root / "logic"),
            "PUDATO_WAREHOUSE__EXTENSION_DIR": str(root / "duckdb_extensions"),
            "PUDATO_REGISTRY__SPOOL_DIR": str(root / "spool"),
        }
        started.append(local.start_worker("table", host_env, log_dir=root / "logs", cwd=REPO, name=f"table-{host}"))
    for process in started:
        local.wait_for_worker(process, "table")  # type: ignore[arg-type]
    return started


def _round(keys: list[str], tag: str, loads: int) -> float:
    group = jobs.group(*[jobs.step("table", "load", table=f"bench_{tag}_{n}", key=keys[n % len(keys)],
                                   all_varchar=True) for n in range(loads)])  # fmt: skip
    start = time.perf_counter()
    job = jobs.wait(jobs.submit(group).job_id, timeout=900)
    elapsed = time.perf_counter() - start
    if job["status"] != "succeeded":
        raise SystemExit(f"loads failed: {[s['error'] for s in job['steps'] if s['error']]}")
    return elapsed


def main(loads: int = 16, rounds: int = 2) -> None:
    with bench_stack((), extra_env=LAKE) as stack:
        s3 = aws.client("s3", stack["settings"].aws)
        keys = list(RELEASES.values())
        for key in keys:
            s3.upload_file(str(DATA / key), stack["settings"].storage.bucket, key)
        timings: dict[int, list[float]] = {}
        for hosts in (1, 2):
            processes = _hosts(stack["env"], stack["state"], hosts)
            try:
                _round(keys, f"warm{hosts}", hosts * 2)  # each worker installs its extensions once
                timings[hosts] = [_round(keys, f"h{hosts}r{r}", loads) for r in range(rounds)]
            finally:
                for process in processes:
                    local.stop(process)  # type: ignore[arg-type]
    one, two = statistics.median(timings[1]), statistics.median(timings[2])
    print(f"{loads} lake table loads (LA files), median of {rounds} rounds")
    print(f"  one host,  one table worker:   {one:6.2f} s  ({loads / one:5.2f} loads/s)")
    print(f"  two hosts, one worker each:    {two:6.2f} s  ({loads / two:5.2f} loads/s)")
    print(f"  speed-up (one / two): {one / two:.2f}x   (aim >= 1.7x)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
