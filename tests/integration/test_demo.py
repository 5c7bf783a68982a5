"""`make demo`'s path: `pudato demo` end to end, in its own process as `make demo` runs it.

The demo starts its own moto, SQLite registry, lake (SQLite catalog, data in moto's S3)
and workers, and sets its settings in its process's environment; so it runs in a
child process with none of the session's settings, never inside the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Rows of the sample mart: the staged rows of both LA General Fund Revenue releases (pudato/demo_data).
MART_ROWS = 10413


def test_the_demo_builds_the_mart_and_every_table_output_carries_its_version(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PUDATO_")}
    finished = subprocess.run(
        [str(BIN / "pudato"), "demo", "--json", "--state-dir", str(tmp_path / "demo")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert finished.returncode == 0, finished.stderr[-4000:]
    job = json.loads(finished.stdout)
    assert job["status"] == "succeeded"
    outputs = {ref["name"]: ref for step in job["steps"] for ref in step["outputs"]}
    assert outputs["main.fct_gf_revenue"]["facets"]["rows"] == MART_ROWS
    tables = [ref for ref in outputs.values() if ref["namespace"].startswith("ducklake://")]
    assert {"main.raw_gf_revenue_fy2017_18", "main.raw_gf_revenue_fy2021_22", "main.fct_gf_revenue"} <= {
        ref["name"] for ref in tables
    }
    for ref in tables:
        assert isinstance(ref["facets"]["snapshot_id"], int), ref["name"]
        assert len(ref["facets"]["schema_fingerprint"]) == 64, ref["name"]
    objects = [ref for ref in outputs.values() if ref["name"].startswith("la_budget/")]
    assert len(objects) == 2
    for ref in objects:
        assert ref["facets"]["version"], ref["name"]  # the S3 version id in moto
    assert job["lineage"]
