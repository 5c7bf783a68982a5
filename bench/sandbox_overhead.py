"""What the sandbox costs: the sample project's warm ``dbt build`` step, sandboxed against in-process.

Both runners build the same project (``dbt/``, committed to a scratch git
repository) on the same DuckDB warehouse, through the TransformHandler, so each
time is a whole step: checkout verification, profile, dbt, artifacts, versions.
The sandboxed runner sends each invocation to its warm child process (scrubbed
environment, DuckDB locked down); the in-process runner calls dbt in this
process. The first run of each parses the project and is reported apart; the
warm runs alternate between the two, so the machine's noise falls on both.
Prints both warm medians and the ratio (aim <= 1.3x), and the ratio of the best
runs, which a busy machine disturbs least.

    .venv/bin/python bench/sandbox_overhead.py [WARM_RUNS]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.builds import compare, report
from pudato.backends.transform.inprocess import InProcessRunner
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.demo import load_releases, make_logic_repo
from pudato.handlers.transform import TransformHandler
from pudato.settings import LogicSettings, Settings, WarehouseSettings


def main(warm_runs: int = 8) -> None:
    state = Path(tempfile.mkdtemp(prefix="pudato-bench-sandbox-"))
    try:
        project, warehouse = state / "logic", state / "warehouse.duckdb"
        sha = make_logic_repo(project)
        load_releases(warehouse)
        settings = Settings(_env_file=None, warehouse=WarehouseSettings(path=warehouse),
                            logic=LogicSettings(cache_dir=state / "cache"))  # fmt: skip
        handlers = {
            "in-process": TransformHandler(settings, runner=InProcessRunner()),
            "sandboxed": TransformHandler(settings, runner=SandboxedRunner()),
        }
        first, warm = compare(handlers, project, sha, warm_runs)
    finally:
        shutil.rmtree(state, ignore_errors=True)

    print(f"sample project dbt build step, DuckDB warehouse, {warm_runs} warm runs each (alternating)")
    median = report(first, warm, width=10)
    ratio = median["sandboxed"] / median["in-process"]
    best = min(warm["sandboxed"]) / min(warm["in-process"])
    print(f"  ratio sandboxed / in-process (warm): median {ratio:.3f}x, best run {best:.3f}x  (aim <= 1.3x)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))
