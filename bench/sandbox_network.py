"""What the sandbox's own network costs: the sample project's dbt build on the lake, relayed or not.

The lake is DuckLake with its catalog in PostgreSQL and its data in (moto) S3,
loaded with the demo's two releases through the real table handler. Both runs
use the sandboxed runner; one gives the child its own namespaces, where every
catalog and S3 connection passes the worker's relay (``namespace``), the other
leaves it in the worker's network behind the audit hook (``hook``, the
baseline). The first build of each is reported apart; the warm runs alternate.
Prints both medians and the ratio (namespace / hook).

    .venv/bin/python bench/sandbox_network.py [WARM_RUNS]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.builds import compare, report
from bench.harness import bench_stack
from pudato.backends.transform.sandboxed import SandboxedRunner
from pudato.demo import DATA, RELEASES, make_logic_repo
from pudato.handlers.table import TableHandler
from pudato.handlers.transform import TransformHandler
from pudato.protocol import Command
from pudato.settings import Settings, StorageSettings


def main(warm_runs: int = 6) -> None:
    with bench_stack((), extra_env={"PUDATO_WAREHOUSE__BACKEND": "ducklake"}) as stack:
        lake: Settings = stack["settings"]
        data_path = f"s3://{lake.storage.bucket}/lake/"  # where the lake keeps data with S3 storage
        lake = lake.model_copy(update={"warehouse": lake.warehouse.model_copy(update={"data_path": data_path})})
        loader = TableHandler(lake.model_copy(update={"storage": StorageSettings(backend="local", local_root=DATA)}))
        for release, key in RELEASES.items():
            loaded = loader.execute(Command(handler="table", action="load",
                                            payload={"table": f"raw_gf_revenue_{release}", "key": key,
                                                     "all_varchar": True}))  # fmt: skip
            if loaded.error:
                raise SystemExit(f"load failed: {loaded.error.message}")
        project = stack["state"] / "logic"
        sha = make_logic_repo(project)
        settings = lake.model_copy(update={"logic": lake.logic.model_copy(update={"cache_dir": stack["state"] / "c"})})
        handlers = {}
        for isolation in ("namespace", "hook"):
            transform = settings.transform.model_copy(update={"network_isolation": isolation})
            chosen = settings.model_copy(update={"transform": transform})
            handlers[isolation] = TransformHandler(chosen, runner=SandboxedRunner.from_settings(chosen))
        first, warm = compare(handlers, project, sha, warm_runs)

    print(f"sample project dbt build on the lake (PostgreSQL catalog, moto S3), {warm_runs} warm runs each")
    median = report(first, warm, width=9)
    print(f"  ratio namespace (relayed) / hook: median {median['namespace'] / median['hook']:.3f}x, "
          f"best run {min(warm['namespace']) / min(warm['hook']):.3f}x")  # fmt: skip


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))
