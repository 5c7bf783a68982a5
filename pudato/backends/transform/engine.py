"""dbt in the current process: the part both runners share.

:class:`DbtEngine` keeps the parsed manifest of each commit (a commit never
changes, so only the first step on a commit pays for parsing), checks the
repository's policy on it, applies a rerun's pins, calls ``dbtRunner`` and closes
the DuckDB instance dbt-duckdb would otherwise keep. It runs in the worker
(:mod:`.inprocess`) or in the sandbox's child process (:mod:`.child`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from pudato.backends.transform import DbtInvocation, DbtResult, TransformFailed
from pudato.backends.transform.pins import pinned_manifest
from pudato.backends.transform.policy import check_manifest, short

_MANIFEST_CACHE_SIZE = 8


class DbtEngine:
    """dbtRunner with a per-commit manifest cache; one invocation at a time (dbt's state is global)."""

    def __init__(self, temp_root: Path | None = None) -> None:
        self.temp_root = temp_root
        self._manifests: OrderedDict[str, Any] = OrderedDict()
        self._profiles: Path | None = None

    def invoke(self, invocation: DbtInvocation) -> DbtResult:
        if invocation.command == "deps":
            # Packages are reinstalled: parse again rather than trust a manifest of the old ones.
            for key in [key for key in self._manifests if key.startswith(invocation.sha)]:
                del self._manifests[key]
        cached = f"{invocation.sha}:{invocation.manifest_key}" in self._manifests
        manifest = self._manifest(invocation) if invocation.parse_args is not None else None
        results_file = Path(invocation.target_path) / "run_results.json" if invocation.target_path else None
        if results_file is not None:
            results_file.unlink(missing_ok=True)  # a failed invocation must not leave us an older run's results
        args = [invocation.command, *invocation.args, "--profiles-dir", str(self._profiles_dir(invocation))]
        if manifest is not None and invocation.pins:
            with pinned_manifest(manifest, invocation.pins, invocation.attached):
                result = _invoke(args, manifest)
        else:
            result = _invoke(args, manifest)
        results: list[dict[str, Any]] = []
        if results_file is not None and results_file.is_file():
            try:
                results = json.loads(results_file.read_text()).get("results", [])
            except (OSError, ValueError):
                results = []
        error = str(result.exception) if result.exception is not None else None
        parsed = manifest is not None and not cached
        return DbtResult(success=bool(result.success) and error is None, error=error, results=results, parsed=parsed)

    def _manifest(self, invocation: DbtInvocation) -> Any:
        key = f"{invocation.sha}:{invocation.manifest_key}"
        if key in self._manifests:
            self._manifests.move_to_end(key)
            manifest = self._manifests[key]
        else:
            parsed = _invoke(["parse", *(invocation.parse_args or []), "--profiles-dir",
                              str(self._profiles_dir(invocation))], None)  # fmt: skip
            if not parsed.success or parsed.exception is not None:
                raise TransformFailed(
                    f"dbt could not parse the project at {invocation.sha[:12]}: "
                    f"{short(str(parsed.exception or 'parse failed'))}",
                    logic_version=invocation.sha,
                )
            manifest = self._manifests[key] = parsed.result
            while len(self._manifests) > _MANIFEST_CACHE_SIZE:
                self._manifests.popitem(last=False)
        check_manifest(manifest, invocation.sha, invocation.allow_python_models, invocation.allow_hooks)
        return manifest

    def _profiles_dir(self, invocation: DbtInvocation) -> Path:
        """The one profile the platform decides, in a folder private to this engine.

        The target holds secrets (the lake's catalog password, the S3 key): the folder
        is private to this user (mkdtemp) and the file readable by its owner only.
        """
        if self._profiles is None or not self._profiles.is_dir():
            self._profiles = Path(tempfile.mkdtemp(prefix="pudato-dbt-profiles-", dir=self.temp_root))
        target = {invocation.target: invocation.output}
        text = yaml.safe_dump({invocation.profile: {"target": invocation.target, "outputs": target}}, sort_keys=True)
        path = self._profiles / "profiles.yml"
        if not path.is_file() or path.read_text() != text:
            path.touch(mode=0o600)
            path.write_text(text)
        return self._profiles

    def close(self) -> None:
        if self._profiles is not None:
            shutil.rmtree(self._profiles, ignore_errors=True)
            self._profiles = None
        self._manifests.clear()


def _invoke(args: list[str], manifest: Any) -> Any:
    from dbt.cli.main import dbtRunner  # lazy: importing dbt costs about a second

    cwd = os.getcwd()
    try:
        return dbtRunner(manifest=manifest).invoke(args)
    finally:
        # dbt changes directory into the project; other handlers in this process use relative paths.
        os.chdir(cwd)
        _release_warehouse()


def _release_warehouse() -> None:
    """Close the DuckDB instance dbt-duckdb keeps open after a run.

    dbt closes its connections when an invocation ends, but dbt-duckdb keeps the
    database itself (and DuckDB's file lock) for the life of the process, so the
    table and query workers in other processes could not open the warehouse.
    dbt-duckdb has no public call that closes it; its environment is private.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment: Any = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if environment is not None:
        environment.close()
