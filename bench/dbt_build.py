"""The sample project's ``dbt build`` through the TransformHandler against the dbt CLI.

Both build the same project (``dbt/``, committed to a scratch git repository)
on the same DuckDB warehouse, with the two raw tables loaded first the way the
table handler loads them. Pudato runs dbt in-process on a per-commit checkout
and reuses the parsed manifest, so its warm time (second run onward, median)
is what a worker pays per step. The CLI is a subprocess per build, with partial
parsing warm too (median from its second run on). Prints both and the ratio.

    .venv/bin/python bench/dbt_build.py [PUDATO_RUNS] [CLI_RUNS]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pudato.backends.transform.inprocess import InProcessRunner
from pudato.demo import load_releases, make_logic_repo
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command
from pudato.settings import LogicSettings, Settings, WarehouseSettings

REPO = Path(__file__).resolve().parents[1]
DBT = REPO / ".venv" / "bin" / "dbt"


def main(pudato_runs: int = 6, cli_runs: int = 4) -> None:
    state = Path(tempfile.mkdtemp(prefix="pudato-bench-dbt-"))
    project, warehouse = state / "logic", state / "warehouse.duckdb"
    sha = make_logic_repo(project)
    load_releases(warehouse)

    settings = Settings(_env_file=None, warehouse=WarehouseSettings(path=warehouse),
                        logic=LogicSettings(cache_dir=state / "cache"))  # fmt: skip
    handler = TransformHandler(settings, runner=InProcessRunner())
    pudato: list[float] = []
    for run in range(pudato_runs):
        command = Command(handler="transform", action="build", job_id=f"bench-{run}", logic_repo=str(project),
                          logic_version=sha)  # fmt: skip
        start = time.perf_counter()
        result = handler.execute(command)
        pudato.append(time.perf_counter() - start)
        if result.status != "succeeded":
            raise SystemExit(f"Pudato build failed: {result.error}")

    # The CLI gets a profile like the one Pudato writes, and its own target/ and logs/.
    profiles = state / "cli-profiles"
    profiles.mkdir()
    output = {"type": "duckdb", "path": str(warehouse), "schema": "main", "threads": 1, "keep_open": False}
    (profiles / "profiles.yml").write_text(json.dumps({"pudato": {"target": "pudato", "outputs": {"pudato": output}}}))
    cli: list[float] = []
    for run in range(cli_runs):
        args = [str(DBT), "build", "--project-dir", str(project), "--profiles-dir", str(profiles),
                "--target-path", str(state / "cli-target"), "--log-path", str(state / "cli-logs"), "--quiet",
                "--vars", json.dumps({"pudato_logic_version": sha, "pudato_job_id": f"cli-{run}"})]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(args, check=True, cwd=state)
        cli.append(time.perf_counter() - start)

    warm_pudato, warm_cli = statistics.median(pudato[1:]), statistics.median(cli[1:])
    rows = duckdb.connect(str(warehouse), read_only=True).execute("select count(*) from fct_gf_revenue").fetchone()
    print(f"sample project dbt build ({rows[0] if rows else '?'} mart rows), warehouse {warehouse}")
    print(f"  Pudato TransformHandler: first {pudato[0]:.2f} s, warm median {warm_pudato:.3f} s "
          f"over {len(pudato) - 1} runs {[round(t, 3) for t in pudato[1:]]}")  # fmt: skip
    print(f"  dbt CLI subprocess:      first {cli[0]:.2f} s, warm median {warm_cli:.3f} s "
          f"over {len(cli) - 1} runs {[round(t, 3) for t in cli[1:]]}")  # fmt: skip
    print(f"  ratio Pudato / CLI (warm): {warm_pudato / warm_cli:.3f}x  (aim <= 0.15x)")
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
