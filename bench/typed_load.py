"""Typed loads: Pudato's load (stage as text, infer, check, write) against bare DuckDB read_csv.

A real release (Oxford City Council's spending, tests/data/incorrigible) is
repeated to about 200,000 rows. Three loads of it into a DuckDB file:

* bare DuckDB: ``CREATE TABLE AS SELECT * FROM read_csv(...)`` with the types the load chose;
* Pudato without a contract (types inferred from every value, nothing rejected);
* Pudato with a contract (date format, decimal money, a pattern, allowed values, a key).

Prints rows/s and the ratios. Not a test.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import duckdb

from pudato.backends.storage.local import LocalStorage
from pudato.backends.warehouse.duckdb import DuckDBWarehouse
from pudato.handlers.table import TableHandler
from pudato.protocol import Command
from pudato.settings import Settings

SOURCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "incorrigible" / "oxford_spend_2014_q3.csv"
CONTRACT = {
    "columns": {
        "paid_date": {"type": "date", "format": "%d/%m/%Y"},
        "amount": {"type": "decimal(12,2)"},
        "expenditure_code": {"pattern": "[A-Z][0-9A-Z]{3,6}"},
        "type": {"allowed": ["Revenue", "Capital"]},
    },
}


def main(copies: int = 5000) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pudato-bench-"))
    header, *rows = SOURCE.read_text().splitlines(keepends=True)
    big = folder / "spend.csv"
    with big.open("w") as out:
        out.write(header)
        for n in range(copies):
            for row in rows:
                out.write(row.replace("_1,", f"_{n},", 1))
    total = copies * len(rows)
    settings = Settings(_env_file=None, storage={"backend": "local", "local_root": folder / "objects"},
                        warehouse={"path": folder / "w.duckdb"})
    storage = LocalStorage(settings.storage.local_root)
    storage.put_file("spend.csv", big)
    handler = TableHandler(settings, storage, DuckDBWarehouse.from_settings(settings))

    def load(table: str, **payload: object) -> tuple[float, dict[str, str]]:
        clock = time.perf_counter()
        result = handler.execute(Command(handler="table", action="load",
                                         payload={"table": table, "key": "spend.csv", **payload}))
        assert result.status == "succeeded", result.error
        return time.perf_counter() - clock, {c["name"]: c["type"] for c in result.data["columns"]}

    plain_s, types = load("plain")
    contract_s, _ = load("contracted", contract=CONTRACT, unique_key=["trans_no"])
    con = duckdb.connect(str(folder / "bare.duckdb"))
    described = [d[0] for d in con.execute(f"SELECT * FROM read_csv('{big}') LIMIT 0").description]
    given = ", ".join(f"'{h}': '{t}'" for h, t in zip(described, types.values(), strict=True))
    clock = time.perf_counter()
    con.execute(f"CREATE TABLE bare AS SELECT * FROM read_csv('{big}', types = {{{given}}})")
    bare_s = time.perf_counter() - clock
    con.close()
    # A step opens the warehouse, and closes it once the table is written (DuckDB checkpoints then):
    # the same statement with that around it.
    clock = time.perf_counter()
    with duckdb.connect(str(folder / "bare_closed.duckdb")) as closed:
        closed.execute(f"CREATE TABLE bare AS SELECT * FROM read_csv('{big}', types = {{{given}}})")
    bare_closed_s = time.perf_counter() - clock
    print(f"rows: {total:,}")
    print(f"bare DuckDB read_csv:       {total / bare_s:12,.0f} rows/s")
    print(f"  the same, opened+closed:  {total / bare_closed_s:12,.0f} rows/s")
    print(f"Pudato load, no contract:   {total / plain_s:12,.0f} rows/s  ({bare_s / plain_s:.2f}x bare, "
          f"{bare_closed_s / plain_s:.2f}x bare opened+closed)")
    print(f"Pudato load, contract:      {total / contract_s:12,.0f} rows/s  ({plain_s / contract_s:.2f}x no contract)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
