"""The demo: the sample job end to end, on embedded defaults.

It starts moto for the run (S3, SQS, SNS), uses a SQLite registry and a lake
(DuckLake) whose catalog is a SQLite file in a fresh state folder and whose data
files go to moto's S3, and starts one worker per queue. SQLite serialises the
lake's writers, which one demo machine does not notice; the stack and the tests
use a PostgreSQL catalog, where writers on any number of hosts commit at once. It makes a
git repository from the sample dbt project (standing for the analysts' own) and
runs its ``la_revenue`` pipeline pinned to that repository's commit: store both
Los Angeles General Fund Revenue releases, load each into a table (in
parallel), build the tidy model with dbt, and query it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pudato import devstack, infra, jobs, lineage, pipelines
from pudato.backends.warehouse import warehouse_backend
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry
from pudato.settings import get_settings, reset_settings

DATA = Path(__file__).parent / "demo_data"
PROJECT = Path(__file__).resolve().parents[1] / "dbt"
RELEASES = {
    "fy2017_18": "la_budget/general_fund_revenue_fy2017-18.csv",
    "fy2021_22": "la_budget/general_fund_revenue_fy2021-22.csv",
}

COMPARE_SQL = """
with y2017 as (
    select {dept} as dept, max(department_name) as department,
           sum(try_cast(_2016_17_adopted_budget as decimal(18, 2))) as adopted_2016_17
    from raw_gf_revenue_fy2017_18 group by all
), y2021 as (
    select {dept} as dept, max(dept_name) as department,
           sum(try_cast(_2021_22_adopted as decimal(18, 2))) as adopted_2021_22
    from raw_gf_revenue_fy2021_22 group by all
)
select coalesce(y2021.dept, y2017.dept) as dept,
       coalesce(y2021.department, y2017.department) as department,
       y2017.adopted_2016_17, y2021.adopted_2021_22
from y2017 full join y2021 using (dept)
order by coalesce(y2021.adopted_2021_22, 0) desc
limit 10
""".format(dept="case when regexp_matches(dept_code, '^[0-9]+$') then lpad(dept_code, 2, '0') else dept_code end")


def sample_job() -> jobs.Node:
    """The spine's job, without a logic repository: ingest, load both (a chord), compare."""
    loads: list[jobs.Node] = [
        jobs.chain(
            jobs.step("storage", "put", name=f"ingest_{release}", key=key, source=key),
            jobs.step("table", "load", name=f"load_{release}", table=f"raw_gf_revenue_{release}", key=key,
                      all_varchar=True),
        )
        for release, key in RELEASES.items()
    ]
    return jobs.chord(loads, jobs.step("query", "run", name="compare_releases", sql=COMPARE_SQL))


def ingest_steps() -> jobs.Node:
    return jobs.group(*[jobs.step("storage", "put", name=f"ingest_{release}", key=key, source=key)
                        for release, key in RELEASES.items()])


def load_releases(warehouse: Path) -> None:
    """Load both releases into ``warehouse`` with the table handler, straight from the packaged files.

    For tests and benchmarks of the dbt project that need the raw tables without a broker.
    """
    from pudato.handlers.table import TableHandler
    from pudato.protocol import Command
    from pudato.settings import Settings

    # Through a dict: ``_env_file`` is pydantic-settings' init option, unknown to the type checker.
    options: dict[str, Any] = {"_env_file": None, "storage": {"backend": "local", "local_root": DATA},
                               "warehouse": {"path": warehouse}}
    settings = Settings(**options)
    handler = TableHandler(settings)
    for release, key in RELEASES.items():
        payload = {"table": f"raw_gf_revenue_{release}", "key": key, "all_varchar": True}
        result = handler.execute(Command(handler="table", action="load", payload=payload))
        if result.error:
            raise RuntimeError(f"loading {key} failed: {result.error.message}")


def make_logic_repo(target: Path, project: Path = PROJECT) -> str:
    """A git repository made from the sample dbt project, standing for the analysts' own."""
    shutil.copytree(project, target, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml"))
    git = ["git", "-C", str(target), "-c", "user.name=Pudato demo", "-c", "user.email=demo@pudato.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Sample logic: LA General Fund Revenue"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def run(state_dir: Path | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Run the demo; returns the finished job with its steps and the mart's lineage."""
    state = Path(state_dir or tempfile.mkdtemp(prefix="pudato-demo-")).resolve()
    state.mkdir(parents=True, exist_ok=True)
    repo = state / "logic-repo"
    if not repo.exists():
        make_logic_repo(repo)
    with devstack.moto_server(log_path=state / "moto.log") as endpoint:
        env = {
            "PUDATO_AWS__ENDPOINT_URL": endpoint,
            "PUDATO_AWS__ACCESS_KEY_ID": "demo",
            "PUDATO_AWS__SECRET_ACCESS_KEY": "demo",
            "PUDATO_STORAGE__BACKEND": "s3",
            "PUDATO_STORAGE__IMPORT_ROOTS": f'["{DATA}"]',
            "PUDATO_REGISTRY__URL": f"sqlite:///{state}/registry.db",
            "PUDATO_REGISTRY__SPOOL_DIR": str(state / "spool"),
            "PUDATO_WAREHOUSE__BACKEND": "ducklake",
            "PUDATO_WAREHOUSE__EXTENSION_DIR": str(state / "duckdb_extensions"),
            "PUDATO_LOGIC__CACHE_DIR": str(state / "logic-cache"),
            "PUDATO_WORKER__LIVENESS_DIR": str(state / "liveness"),
        }
        os.environ.update(env)
        reset_settings()
        settings = get_settings()
        infra.up(settings)
        upgrade(settings.registry.url)
        # Imported once the environment is set: celeryconfig reads the settings when imported.
        from workers.app import app as celery_app

        with devstack.workers(env, log_dir=state / "logs"):
            submitted = pipelines.submit("la_revenue", str(repo), "main", settings=settings,
                                         before=[ingest_steps()], trigger="demo", app=celery_app)
            job = jobs.wait(submitted.job_id, timeout=timeout)
    registry = Registry(settings.registry.url)
    mart = warehouse_backend(settings).reference("main.fct_gf_revenue")
    job["lineage"] = lineage.trace(registry, mart.namespace, mart.name, "upstream")
    job["state_dir"] = str(state)
    return job


def registry_for(job: dict[str, Any]) -> Registry:
    return Registry(f"sqlite:///{job['state_dir']}/registry.db")
