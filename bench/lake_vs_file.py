"""The demo's query on the lake against the same query on a local DuckDB file.

Both warehouses get the two LA releases through the real table handler; then
the demo's ``compare_releases`` SQL runs through the real query handler, ``RUNS``
times each, alternating. The lake's catalog is PostgreSQL and its data are in
(moto) S3; the file is on local disk. Prints the medians and the ratio
(lake / file; aim <= 1.5x).

    .venv/bin/python bench/lake_vs_file.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import bench_stack
from pudato.demo import COMPARE_SQL, DATA, RELEASES
from pudato.handlers.query import QueryHandler
from pudato.handlers.table import TableHandler
from pudato.protocol import Command
from pudato.settings import Settings


def _execute(handler: object, action: str, **payload: object) -> dict[str, object]:
    result = handler.execute(Command(handler=handler.name, action=action, payload=payload))  # type: ignore[attr-defined]
    if result.error:
        raise SystemExit(f"{action} failed: {result.error.message}")
    return result.data


def main(runs: int = 15) -> None:
    with bench_stack((), extra_env={"PUDATO_WAREHOUSE__BACKEND": "ducklake"}) as stack:
        lake = stack["settings"]
        state = stack["state"]
        local = Settings(_env_file=None, storage={"backend": "local", "local_root": DATA},
                         warehouse={"backend": "duckdb", "path": state / "file" / "warehouse.duckdb"})  # fmt: skip
        data_path = f"s3://{lake.storage.bucket}/lake/"
        lake_loader = lake.model_copy(update={
            "storage": local.storage, "warehouse": lake.warehouse.model_copy(update={"data_path": data_path})})
        handlers = {}
        for label, settings, loader in (("lake", lake, lake_loader), ("file", local, local)):
            tables = TableHandler(loader)
            for release, key in RELEASES.items():
                _execute(tables, "load", table=f"raw_gf_revenue_{release}", key=key, all_varchar=True)
            handlers[label] = QueryHandler(settings)
        timings: dict[str, list[float]] = {"lake": [], "file": []}
        for _ in range(runs + 1):
            for label, handler in handlers.items():
                start = time.perf_counter()
                data = _execute(handler, "run", sql=COMPARE_SQL)
                timings[label].append(time.perf_counter() - start)
                assert data["row_count"] == 10
    lake_s, file_s = (statistics.median(timings[k][1:]) for k in ("lake", "file"))
    print(f"demo compare_releases query through the query handler, median of {runs}")
    print(f"  lake (PostgreSQL catalog, data in S3): {lake_s * 1000:7.1f} ms")
    print(f"  local DuckDB file:                     {file_s * 1000:7.1f} ms")
    print(f"  ratio (lake / file): {lake_s / file_s:.2f}x   (aim <= 1.5x)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))
