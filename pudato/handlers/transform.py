"""The transform handler: dbt, in-process, on one commit of the analysts' logic repository.

A step names the repository and the commit (``Command.logic_repo`` and
``Command.logic_version``); an ad-hoc step may give ``repo`` and ``ref`` in its
payload instead, resolved when it runs. The handler checks the commit out (one
clean directory per SHA, see :mod:`pudato.backends.logic`) and runs dbt there
with ``dbtRunner``, never as a subprocess:

* the platform writes the profile: the analysts' ``profiles.yml`` is ignored,
  and the warehouse is always the configured backend's (a DuckDB file, or the
  lake attached by an in-memory DuckDB: :meth:`WarehouseBackend.dbt_target`);
* ``target/`` and ``logs/`` live in a per-SHA work directory outside the checkout;
* the parsed manifest is kept per SHA in the process (a commit never changes),
  so only the first step on a commit pays for parsing;
* every row a model writes carries ``_pudato_logic_version`` (the checkout's
  SHA) and ``_pudato_job_id`` through the dbt vars of the same names.

Lineage comes from dbt's artifacts: ``manifest.json`` for the graph, and
``run_results.json`` for what ran. Outputs are the relations built; inputs are
the upstream relations (models and sources, named as the table handler names
them) that this run did not build itself. Each carries its version (snapshot id,
rows, schema fingerprint): inputs as they were when the run started, outputs as
the run left them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import shlex
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from pudato import datasets
from pudato.backends.logic import Checkout, LogicRepository, is_sha, logic_backend
from pudato.backends.warehouse import WarehouseBackend, warehouse_backend
from pudato.errors import BackendUnavailable, InvalidCommand, PudatoError, TerminalError, UnsafeInput
from pudato.handlers import dbt_pins
from pudato.handlers.base import Handler, Payload, action
from pudato.lineage.dbt_artifacts import FAILED_STATUSES, RAN_STATUSES, RELATIONAL, LogicSource
from pudato.lineage.dbt_artifacts import Node as _Node
from pudato.lineage.dbt_artifacts import execute_start as _execute_start
from pudato.lineage.dbt_artifacts import graph as _graph
from pudato.lineage.dbt_artifacts import node_record as _node_record
from pudato.lineage.dbt_artifacts import read_json as _read_json
from pudato.lineage.dbt_artifacts import short as _short
from pudato.lineage.dbt_artifacts import test_record as _test_record
from pudato.lineage.dbt_artifacts import upstream as _upstream
from pudato.lineage.dbt_artifacts import without_code as _without_code
from pudato.protocol import Command, DataReference, Event, ExecutionRecord, Outcome, utcnow
from pudato.settings import Settings, get_settings

_SELECTOR = re.compile(r"^[A-Za-z0-9_.:+*@/,=-]+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PROFILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
# Statuses of nodes that ran far enough to read their inputs.
BUILDING_ACTIONS = {"build", "run", "seed"}
DEFAULT_TARGET = "pudato"
# DuckDB's words for "another process holds the warehouse" (a file) or "committed first" (the lake):
# worth a retry, not a failure.
_LOCK_CONFLICTS = (
    "Could not set lock on file", "Conflicting lock is held", "Transaction conflict",
    "Failed to commit DuckLake transaction",
)  # fmt: skip
_PARSE_JOB_ID = "parse"
_MANIFEST_CACHE_SIZE = 8

# dbt keeps global state (flags, adapters, the working directory): one invocation at a time.
_DBT_LOCK = threading.Lock()
_MANIFESTS: OrderedDict[tuple[str, ...], Any] = OrderedDict()
_PROFILES: dict[int, Path] = {}


class TransformFailed(TerminalError):
    """dbt ran and reported failure: a node errored, a test failed, or dbt itself stopped."""


class TransformPayload(Payload):
    select: list[str] = Field(default_factory=list, max_length=200)
    exclude: list[str] = Field(default_factory=list, max_length=200)
    vars: dict[str, Any] = Field(default_factory=dict)
    full_refresh: bool = False
    target: str | None = None
    # Ad hoc only: used when the command carries no logic_repo / logic_version.
    repo: str | None = None
    ref: str | None = None


class TransformHandler(Handler):
    """Runs dbt actions (build, run, test, seed, compile, deps) on a pinned commit."""

    name = "transform"

    def __init__(
        self,
        settings: Settings | None = None,
        logic: LogicRepository | None = None,
        warehouse: WarehouseBackend | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.logic = logic or logic_backend(self.settings)
        self.work_root = self.settings.logic.cache_dir.resolve() / "work"
        self.warehouse = warehouse or warehouse_backend(self.settings)

    @action("build", TransformPayload)
    def build(self, payload: TransformPayload, command: Command) -> Outcome:
        return self._dbt("build", payload, command)

    @action("run", TransformPayload)
    def run(self, payload: TransformPayload, command: Command) -> Outcome:
        return self._dbt("run", payload, command)

    @action("test", TransformPayload)
    def test(self, payload: TransformPayload, command: Command) -> Outcome:
        return self._dbt("test", payload, command)

    @action("seed", TransformPayload)
    def seed(self, payload: TransformPayload, command: Command) -> Outcome:
        return self._dbt("seed", payload, command)

    @action("compile", TransformPayload)
    def compile(self, payload: TransformPayload, command: Command) -> Outcome:
        return self._dbt("compile", payload, command)

    @action("deps", TransformPayload)
    def deps(self, payload: TransformPayload, command: Command) -> Outcome:
        return self._dbt("deps", payload, command)

    # -- one action -------------------------------------------------------------------

    def _dbt(self, verb: str, payload: TransformPayload, command: Command) -> Outcome:
        _check_payload(verb, payload)
        repo, sha = self._pin(payload, command)
        checkout = self.logic.checkout(repo, sha)
        profile = _profile_name(checkout, repo)
        target = payload.target or DEFAULT_TARGET
        work = self.work_root / checkout.sha
        work.mkdir(parents=True, exist_ok=True)
        with _DBT_LOCK, _file_lock(work / ".lock"):
            try:
                run = _Run(self, verb, payload, command, checkout, profile, target, work)
                return run.execute()
            except PudatoError as exc:
                # A failed step still records which commit it ran (a selector that matched nothing, a parse error).
                if exc.outcome is None:
                    exc.outcome = Outcome(logic_version=checkout.sha)
                raise

    def _pin(self, payload: TransformPayload, command: Command) -> tuple[str, str]:
        """The repository and full SHA to run: the command's pin, else the payload's ref resolved now."""
        repo = command.logic_repo or payload.repo
        if not repo:
            raise InvalidCommand(
                "transform needs a logic repository: set the command's logic_repo and logic_version, "
                "or give repo and ref in the payload"
            )
        if command.logic_version:
            if not is_sha(command.logic_version):
                raise InvalidCommand(
                    f"logic_version {command.logic_version[:80]!r} must be a full 40-hex commit SHA",
                    logic_version=command.logic_version[:80],
                )
            return repo, command.logic_version.lower()
        if not payload.ref:
            raise InvalidCommand(f"no logic_version on the command and no ref in the payload for {repo}")
        return repo, self.logic.resolve(repo, payload.ref)


class _Run:
    """One dbt invocation and the Outcome built from its artifacts."""

    def __init__(
        self,
        handler: TransformHandler,
        verb: str,
        payload: TransformPayload,
        command: Command,
        checkout: Checkout,
        profile: str,
        target: str,
        work: Path,
    ) -> None:
        self.verb, self.payload, self.command, self.checkout = verb, payload, command, checkout
        self.warehouse, self.lock_timeout_s = handler.warehouse, handler.settings.warehouse.lock_timeout_s
        self.profile, self.target, self.work = profile, target, work
        self.target_path, self.log_path = work / "target", work / "logs"
        # An exact rerun reads its lake inputs at their recorded snapshots (pudato.handlers.dbt_pins).
        self.pins = dbt_pins.table_pins(command, self.warehouse)
        dbt_pins.check(self.warehouse, self.pins)
        self.attached = dbt_pins.attachments(self.warehouse, self.pins)
        output = dbt_pins.with_attachments(self.warehouse.dbt_target(), self.attached)
        self.profiles_dir = _profiles_dir(profile, target, output)

    def execute(self) -> Outcome:
        deps_lock = self._deps_if_needed()
        if self.verb == "deps":
            # Packages were reinstalled: parse again rather than trust a manifest of the old ones.
            for key in [key for key in _MANIFESTS if key[0] == self.checkout.sha]:
                del _MANIFESTS[key]
            return self._deps_outcome(deps_lock)
        manifest = self._manifest()
        args = [self.verb, *self._common_args(self.command.job_id or "adhoc"), *self._selection()]
        started_at, clock = utcnow(), time.perf_counter()
        before = self.warehouse.current_snapshot()
        with dbt_pins.pinned_manifest(manifest, self.pins, self.attached):
            result, results = self._invoke_waiting_for_warehouse(args, manifest)
        duration_ms = (time.perf_counter() - clock) * 1000
        graph = _graph(_read_json(self.target_path / "manifest.json"))
        outcome = self._outcome(results, graph, args, started_at, duration_ms)
        outcome = _with_versions(outcome, self.warehouse, before, self.pins)
        self._raise_on_failure(result, results, outcome)
        if not results and (self.payload.select or self.payload.exclude):
            raise _with_outcome(outcome, InvalidCommand(
                f"selector {' '.join(self.payload.select) or '(all)'}"
                + (f" excluding {' '.join(self.payload.exclude)}" if self.payload.exclude else "")
                + f" matched no nodes for dbt {self.verb} at {self.checkout.sha[:12]}",
                select=self.payload.select,
                exclude=self.payload.exclude,
            ))
        return outcome

    def _invoke_waiting_for_warehouse(self, args: list[str], manifest: Any) -> tuple[Any, list[dict[str, Any]]]:
        """Invoke dbt; while another process holds the warehouse and nothing ran yet, wait and retry.

        Like the other warehouse users, a lock is waited out (jittered backoff, up to
        ``warehouse.lock_timeout_s``) before it becomes BackendUnavailable.
        """
        results_file = self.target_path / "run_results.json"
        deadline, delay = time.monotonic() + self.lock_timeout_s, 0.05
        while True:
            results_file.unlink(missing_ok=True)  # a failed invocation must not leave us an older run's results
            result = _invoke(args, manifest)
            results = _read_json(results_file).get("results", []) if results_file.is_file() else []
            blocked = _lock_conflict(str(result.exception or "")) and not results
            remaining = deadline - time.monotonic()
            if not blocked or remaining <= 0:
                return result, results
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 2.0)

    # -- dbt arguments ----------------------------------------------------------------

    def _common_args(self, job_id: str, with_target_path: bool = True) -> list[str]:
        dbt_vars = {**self.payload.vars, "pudato_logic_version": self.checkout.sha, "pudato_job_id": job_id}
        args = [
            "--project-dir", str(self.checkout.path),
            "--profiles-dir", str(self.profiles_dir),
            "--profile", self.profile,
            "--target", self.target,
            "--log-path", str(self.log_path),
            "--vars", json.dumps(dbt_vars, sort_keys=True, default=str),
            "--quiet", "--no-use-colors", "--no-send-anonymous-usage-stats", "--no-version-check",
        ]  # fmt: skip
        if with_target_path:
            args += ["--target-path", str(self.target_path), "--partial-parse"]
        return args

    def _selection(self) -> list[str]:
        args: list[str] = []
        if self.payload.select:
            args += ["--select", *self.payload.select]
        if self.payload.exclude:
            args += ["--exclude", *self.payload.exclude]
        if self.payload.full_refresh:
            args.append("--full-refresh")
        return args

    def _manifest(self) -> Any:
        """The parsed manifest for this commit, parsed once per process.

        The job id is left out of the key, and parsed as a placeholder: it only
        matters when SQL is compiled, which happens at run time with the step's vars.
        """
        key = (
            self.checkout.sha, str(self.checkout.path), self.profile, self.target, self.warehouse.namespace,
            json.dumps(self.payload.vars, sort_keys=True, default=str),
        )  # fmt: skip
        if key in _MANIFESTS:
            _MANIFESTS.move_to_end(key)
            return _MANIFESTS[key]
        result = _invoke(["parse", *self._common_args(_PARSE_JOB_ID)], None)
        if not result.success or result.exception is not None:
            raise TransformFailed(
                f"dbt could not parse the project at {self.checkout.sha[:12]}: "
                f"{_short(str(result.exception or 'parse failed'))}",
                logic_version=self.checkout.sha,
            )
        _MANIFESTS[key] = result.result
        while len(_MANIFESTS) > _MANIFEST_CACHE_SIZE:
            _MANIFESTS.popitem(last=False)
        return result.result

    # -- packages ---------------------------------------------------------------------

    def _deps_if_needed(self) -> str | None:
        """Install dbt packages if the project declares some and they are missing (or asked to)."""
        project = self.checkout.path
        install_path = project / str(_project_yaml(project).get("packages-install-path") or "dbt_packages")
        if self.verb == "deps" or (_declares_packages(project) and not install_path.is_dir()):
            args = ["deps", *self._common_args(self.command.job_id or "adhoc", with_target_path=False)]
            result = _invoke(args, None)
            if not result.success:
                raise TransformFailed(
                    f"dbt deps failed at {self.checkout.sha[:12]}: {_short(str(result.exception or 'see dbt log'))}",
                    logic_version=self.checkout.sha,
                )
        lock = project / "package-lock.yml"
        return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None

    def _deps_outcome(self, package_lock: str | None) -> Outcome:
        return Outcome(
            data={"logic_version": self.checkout.sha, "package_lock_sha256": package_lock, "nodes": [], "tests": []},
            logic_version=self.checkout.sha,
        )

    # -- the Outcome ------------------------------------------------------------------

    def _outcome(
        self,
        results: list[dict[str, Any]],
        graph: dict[str, _Node],
        args: list[str],
        started_at: datetime,
        duration_ms: float,
    ) -> Outcome:
        namespace = self.warehouse.namespace
        outputs: dict[str, DataReference] = {}
        inputs: dict[tuple[str, str], DataReference] = {}
        nodes, tests = [], []
        executions = [
            ExecutionRecord(engine="dbt", statement=self._statement(), started_at=started_at, duration_ms=duration_ms)
        ]
        for item in results:
            uid, status = item["unique_id"], item.get("status")
            node = graph.get(uid) or _Node(uid.split(".", 1)[0], None, ())
            upstream = _upstream(uid, graph, namespace, self._logic_source())
            record = _node_record(item, node, upstream)
            nodes.append(record)
            if node.resource_type == "test":
                tests.append(_test_record(item, node))
            if self.verb in BUILDING_ACTIONS and status == "success" and node.resource_type in RELATIONAL:
                if node.relation:
                    facets = {k: record[k] for k in ("unique_id", "resource_type", "status", "rows_affected",
                                                     "execution_time")}  # fmt: skip
                    # Model-level lineage: this relation derives from its own parents, not the whole run's.
                    facets["derived_from"] = [{"namespace": ref.namespace, "name": ref.name} for ref in upstream]
                    outputs[node.relation] = datasets.warehouse_table(namespace, node.relation, **facets)
            if self.verb != "compile" and status in RAN_STATUSES:
                inputs.update({(ref.namespace, ref.name): ref for ref in upstream})
            if record["compiled_code"]:
                executions.append(
                    ExecutionRecord(
                        engine="duckdb",
                        statement=record["compiled_code"],
                        started_at=_execute_start(item) or started_at,
                        duration_ms=float(item.get("execution_time") or 0.0) * 1000,
                        rows=record["rows_affected"],
                    )
                )
        built = {(ref.namespace, ref.name) for ref in outputs.values()}
        return Outcome(
            inputs=[ref for key, ref in inputs.items() if key not in built],
            outputs=list(outputs.values()),
            executions=executions,
            data={
                "nodes": nodes,
                "tests": tests,
                "logic_version": self.checkout.sha,
                "dbt_command": ["dbt", *args],
                "package_lock_sha256": self._package_lock(),
            },
            events=[Event(type="transform.built", dataset=_without_code(ref)) for ref in outputs.values()],
            logic_version=self.checkout.sha,
        )

    def _logic_source(self) -> LogicSource:
        repo = self.command.logic_repo or self.payload.repo or ""
        return LogicSource(repo, self.checkout.sha, self.checkout.path)

    def _statement(self) -> str:
        target = ["--target", self.target] if self.payload.target else []
        return shlex.join(["dbt", self.verb, *self._selection(), *target])

    def _package_lock(self) -> str | None:
        lock = self.checkout.path / "package-lock.yml"
        return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else None

    def _raise_on_failure(self, result: Any, results: list[dict[str, Any]], outcome: Outcome) -> None:
        failing = [item for item in results if item.get("status") in FAILED_STATUSES]
        if result.success and result.exception is None and not failing:
            return
        if failing:
            detail = "; ".join(
                f"{item['unique_id']} ({item['status']}): {_short(item.get('message'), 300)}" for item in failing[:10]
            )
        else:
            detail = _short(str(result.exception or "dbt reported failure without a node result"))
        message = f"dbt {self.verb} failed at {self.checkout.sha[:12]}: {detail}"
        details = {"failing": [item["unique_id"] for item in failing], "logic_version": self.checkout.sha}
        error: TerminalError | BackendUnavailable
        if _lock_conflict(message):
            error = BackendUnavailable(
                f"warehouse {self.warehouse.namespace} is locked by another process, or another writer committed first: {message}",
                **details,
            )
        else:
            error = TransformFailed(message, **details)
        error.outcome = outcome
        raise error


# -- dbt in-process -------------------------------------------------------------------


def _invoke(args: list[str], manifest: Any) -> Any:
    from dbt.cli.main import dbtRunner  # lazy: importing dbt costs about a second

    cwd = os.getcwd()
    try:
        return dbtRunner(manifest=manifest).invoke(args)
    finally:
        # dbt changes directory into the project; other handlers in this process use relative paths.
        os.chdir(cwd)
        _release_warehouse()


def _lock_conflict(message: str) -> bool:
    return any(conflict in message for conflict in _LOCK_CONFLICTS)


def _release_warehouse() -> None:
    """Close the DuckDB instance dbt-duckdb keeps open after a run.

    dbt closes its connections when an invocation ends, but dbt-duckdb keeps the
    database itself (and DuckDB's file lock) for the life of the process, so the
    table and query workers in other processes could not open the warehouse.
    dbt-duckdb has no public call that closes it; its environment is private.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if environment is not None:
        environment.close()


def _profiles_dir(profile: str, target: str, output: dict[str, Any]) -> Path:
    """This process's profiles directory, holding the one profile the platform decides.

    The target may hold secrets (the lake's catalog password, the S3 key): the folder
    is private to this user (mkdtemp) and the file readable by its owner only.
    """
    folder = _PROFILES.get(os.getpid())
    if folder is None or not folder.is_dir():
        folder = Path(tempfile.mkdtemp(prefix=f"pudato-dbt-profiles-{os.getpid()}-"))
        _PROFILES[os.getpid()] = folder
    text = yaml.safe_dump({profile: {"target": target, "outputs": {target: output}}}, sort_keys=True)
    path = folder / "profiles.yml"
    if not path.is_file() or path.read_text() != text:
        path.touch(mode=0o600)
        path.write_text(text)
    return folder


def _with_versions(
    outcome: Outcome, warehouse: WarehouseBackend, before: int | None, pins: dict[str, int] | None = None
) -> Outcome:
    """Warehouse inputs at the snapshot the run started from (or was pinned to); outputs as the run left them."""
    snapshots: dict[str, int | None] = {ref.name: before for ref in outcome.inputs}
    snapshots.update(pins or {})
    return outcome.model_copy(
        update={
            "inputs": warehouse.versioned_references(outcome.inputs, snapshots),
            "outputs": warehouse.versioned_references(outcome.outputs),
        }
    )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Worker processes on the same commit share its work directory (target/, partial parse).
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the project and its artifacts ----------------------------------------------------


def _check_payload(verb: str, payload: TransformPayload) -> None:
    for selector in [*payload.select, *payload.exclude]:
        if not isinstance(selector, str) or selector.startswith("-") or not _SELECTOR.match(selector):
            raise UnsafeInput(
                f"selector {str(selector)[:80]!r} is not allowed: use letters, digits and _ . : + * @ / , = - "
                "(not starting with '-')",
                selector=str(selector)[:80],
            )
    if payload.target is not None and not _IDENTIFIER.match(payload.target):
        raise UnsafeInput(f"target {payload.target[:80]!r} must be an identifier", target=payload.target[:80])
    if payload.full_refresh and verb not in BUILDING_ACTIONS:
        raise InvalidCommand(f"full_refresh applies to build, run and seed, not {verb}")


def _project_yaml(project: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load((project / "dbt_project.yml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidCommand(f"cannot read {project / 'dbt_project.yml'}: {exc}") from None
    return loaded if isinstance(loaded, dict) else {}


def _profile_name(checkout: Checkout, repo: str) -> str:
    if not (checkout.path / "dbt_project.yml").is_file():
        raise InvalidCommand(
            f"{repo} at {checkout.sha[:12]} is not a dbt project: no dbt_project.yml in {checkout.path}",
            repo=repo,
            logic_version=checkout.sha,
        )
    profile = str(_project_yaml(checkout.path).get("profile") or "pudato")
    if not _PROFILE.match(profile):
        raise InvalidCommand(f"dbt_project.yml names profile {profile[:80]!r}; Pudato needs a plain name")
    return profile


def _declares_packages(project: Path) -> bool:
    for name in ("packages.yml", "dependencies.yml"):
        path = project / name
        if path.is_file():
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                return True  # let dbt deps report the problem
            if isinstance(loaded, dict) and loaded.get("packages"):
                return True
    return False


def _with_outcome(outcome: Outcome, error: PudatoError) -> PudatoError:
    error.outcome = outcome
    return error
