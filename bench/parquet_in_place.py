"""A query of a Parquet object in S3 through Pudato against raw DuckDB httpfs on the same object.

One Parquet object (``ROWS`` rows) is put in (moto) S3. Pudato's query handler
reads it as a ``source`` (in place, through httpfs: no download) and runs an
aggregate; the baseline runs the same aggregate over ``read_parquet('s3://...')``
in a fresh DuckDB connection with httpfs and the same S3 secret, also per run.
Prints the medians and the ratio (raw / Pudato; aim >= 0.9x).

    .venv/bin/python bench/parquet_in_place.py [ROWS] [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import bench_stack
from pudato import aws
from pudato.backends.warehouse.engine import load_extension, s3_secret_sql
from pudato.handlers.query import QueryHandler
from pudato.protocol import Command

KEY = "bench/events.parquet"
SQL = "select count(*) as n, sum(amount) as total, count(distinct account) as accounts from events"


def main(rows: int = 5_000_000, runs: int = 7) -> None:
    with bench_stack((), extra_env={"PUDATO_WAREHOUSE__BACKEND": "ducklake"}) as stack:
        settings = stack["settings"]
        local = Path(tempfile.mkdtemp()) / "events.parquet"
        duckdb.sql(f"copy (select range as id, range % 9973 as account, random() * 100 as amount "
                   f"from range({rows})) to '{local}' (format parquet)")  # fmt: skip
        aws.client("s3", settings.aws).upload_file(str(local), settings.storage.bucket, KEY)
        url = f"s3://{settings.storage.bucket}/{KEY}"
        handler = QueryHandler(settings)
        extension_dir = settings.warehouse.extension_dir.resolve()
        secret, _ = s3_secret_sql(settings.aws)
        timings: dict[str, list[float]] = {"pudato": [], "raw": []}
        for _ in range(runs + 1):
            start = time.perf_counter()
            result = handler.execute(Command(handler="query", action="run",
                                             payload={"sql": SQL, "sources": {"events": {"key": KEY}}}))  # fmt: skip
            timings["pudato"].append(time.perf_counter() - start)
            if result.error:
                raise SystemExit(f"query failed: {result.error.message}")
            start = time.perf_counter()
            con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                         "extension_directory": str(extension_dir)})  # fmt: skip
            load_extension(con, "httpfs", extension_dir)
            con.execute(secret)
            raw = con.execute(SQL.replace("from events", f"from read_parquet('{url}')")).fetchall()
            con.close()
            timings["raw"].append(time.perf_counter() - start)
            assert result.data["rows"][0][0] == raw[0][0] == rows
    pudato, raw_s = (statistics.median(timings[k][1:]) for k in ("pudato", "raw"))
    print(f"aggregate over a {rows:,}-row Parquet object in S3, median of {runs}")
    print(f"  through Pudato's query handler: {pudato * 1000:7.1f} ms")
    print(f"  raw DuckDB httpfs:              {raw_s * 1000:7.1f} ms")
    print(f"  ratio (raw / Pudato): {raw_s / pudato:.2f}x   (aim >= 0.9x)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
