"""The transform handler: dbt on one commit of the analysts' logic repository.

A step names the repository and the commit (``Command.logic_repo`` and
``Command.logic_version``); an ad-hoc step may give ``repo`` and ``ref`` in its
payload instead, resolved when it runs. The handler checks the commit out (one
clean directory per SHA, see :mod:`pudato.backends.logic`), decides the dbt
command and the profile (the warehouse's :meth:`WarehouseBackend.dbt_target`,
never the analysts' ``profiles.yml``), and hands both to a transform runner
(:mod:`pudato.backends.transform`: sandboxed by default), which keeps the parsed
manifest per commit. ``target/`` and ``logs/`` live in a per-SHA work directory
outside the checkout. Every row a model writes carries ``_pudato_logic_version``
and ``_pudato_job_id`` through the dbt vars of the same names.

Lineage comes from dbt's artifacts: outputs are the relations built; inputs are
the upstream relations this run did not build itself, each with its version
(inputs as they were when the run started, outputs as the run left them).
Whatever is recorded has the platform's secrets redacted.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr

from pudato import datasets
from pudato.backends.logic import Checkout, LogicRepository, is_sha, logic_backend
from pudato.backends.transform import (
    DbtInvocation,
    TransformFailed,
    TransformRunner,
    project,
    transform_runner,
)
from pudato.backends.transform import pins as dbt_pins
from pudato.backends.transform.policy import check_checkout, redact
from pudato.backends.warehouse import WarehouseBackend, warehouse_backend
from pudato.errors import InvalidCommand, PudatoError, UnsafeInput
from pudato.handlers.base import Handler, Payload, action
from pudato.lineage.dbt_artifacts import RAN_STATUSES, RELATIONAL, LogicSource
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

__all__ = ["TransformFailed", "TransformHandler", "TransformPayload"]

_SELECTOR = re.compile(r"^[A-Za-z0-9_.:+*@/,=-]+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Statuses of nodes that ran far enough to read their inputs.
BUILDING_ACTIONS = {"build", "run", "seed"}
DEFAULT_TARGET = "pudato"
_PARSE_JOB_ID = "parse"


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
        runner: TransformRunner | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.logic = logic or logic_backend(self.settings)
        self.work_root = self.settings.logic.cache_dir.resolve() / "work"
        self.warehouse = warehouse or warehouse_backend(self.settings)
        self.runner = runner or transform_runner(self.settings)
        build = self.settings.transform
        self.build_warehouse = self.warehouse.for_build(
            build.catalog_user,
            _secret(build.catalog_password),
            build.s3_access_key_id,
            _secret(build.s3_secret_access_key),
        )
        self.secrets = self.settings.secret_values()

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
        profile = project.profile_name(checkout, repo)
        target = payload.target or DEFAULT_TARGET
        work = self.work_root / checkout.sha
        work.mkdir(parents=True, exist_ok=True)
        try:
            with project.work_lock(work / ".lock"):
                outcome = _Run(self, verb, payload, command, checkout, profile, target, work).execute()
        except PudatoError as exc:
            # A failed step still records which commit it ran (a selector that matched nothing, a parse error).
            if exc.outcome is None:
                exc.outcome = Outcome(logic_version=checkout.sha)
            # What the step recorded and what its error says are stored and sent on: never a secret.
            exc.message = redact(exc.message, self.secrets)
            exc.args = (exc.message,)
            if isinstance(exc.outcome, Outcome):
                exc.outcome = self._redacted(exc.outcome)
            raise
        return self._redacted(outcome)

    def _redacted(self, outcome: Outcome) -> Outcome:
        if not self.secrets:
            return outcome
        return Outcome.model_validate(redact(outcome.model_dump(mode="json"), self.secrets))

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
        self.handler, self.warehouse = handler, handler.warehouse
        self.profile, self.target, self.work = profile, target, work
        self.target_path, self.log_path = work / "target", work / "logs"
        # An exact rerun reads its lake inputs at their recorded snapshots (pudato.backends.transform.pins).
        self.pins = dbt_pins.table_pins(command, self.warehouse)
        dbt_pins.check(self.warehouse, self.pins)
        # dbt connects with the build's credentials (PUDATO_TRANSFORM__CATALOG_USER, ...), if given.
        self.attached = dbt_pins.attachments(handler.build_warehouse, self.pins)
        self.output = dbt_pins.with_attachments(handler.build_warehouse.dbt_target(), self.attached)

    def execute(self) -> Outcome:
        deps_lock = self._deps_if_needed()
        check_checkout(self.checkout.path, self.checkout.sha)
        if self.verb == "deps":
            return self._deps_outcome(deps_lock)
        args = [*self._common_args(self.command.job_id or "adhoc"), *self._selection()]
        started_at, clock = utcnow(), time.perf_counter()
        before = self.warehouse.current_snapshot()
        invocation = self._invocation(self.verb, args, with_manifest=True)
        result = self.handler.runner.invoke_waiting(invocation, self.handler.settings.warehouse.lock_timeout_s)
        duration_ms = (time.perf_counter() - clock) * 1000
        graph = _graph(_read_json(self.target_path / "manifest.json"))
        outcome = self._outcome(result.results, graph, [self.verb, *args], started_at, duration_ms)
        outcome = _with_versions(outcome, self.warehouse, before, self.pins)
        failure = result.failure(self.verb, self.checkout.sha, self.warehouse.namespace)
        if failure is not None:
            raise _with_outcome(outcome, failure)
        if not result.results and (self.payload.select or self.payload.exclude):
            raise _with_outcome(
                outcome,
                InvalidCommand(
                    f"selector {' '.join(self.payload.select) or '(all)'}"
                    + (f" excluding {' '.join(self.payload.exclude)}" if self.payload.exclude else "")
                    + f" matched no nodes for dbt {self.verb} at {self.checkout.sha[:12]}",
                    select=self.payload.select,
                    exclude=self.payload.exclude,
                ),
            )
        return outcome

    def _invocation(self, verb: str, args: list[str], with_manifest: bool) -> DbtInvocation:
        settings = self.handler.settings.transform
        # The job id is left out of the manifest's key, and parsed as a placeholder: it only
        # matters when SQL is compiled, which happens at run time with the step's vars.
        key = json.dumps([str(self.checkout.path), self.profile, self.target, self.warehouse.namespace,
                          self.payload.vars], sort_keys=True, default=str)  # fmt: skip
        return DbtInvocation(
            command=verb, args=args, sha=self.checkout.sha, profile=self.profile, target=self.target,
            output=self.output, project_dir=str(self.checkout.path),
            target_path=str(self.target_path) if with_manifest else None,
            parse_args=self._common_args(_PARSE_JOB_ID) if with_manifest else None, manifest_key=key,
            pins=self.pins, attached=self.attached,
            allow_python_models=settings.allow_python_models, allow_hooks=settings.allow_hooks,
        )  # fmt: skip

    # -- dbt arguments ----------------------------------------------------------------

    def _common_args(self, job_id: str, with_target_path: bool = True) -> list[str]:
        dbt_vars = {**self.payload.vars, "pudato_logic_version": self.checkout.sha, "pudato_job_id": job_id}
        target_path = self.target_path if with_target_path else None
        return project.common_args(self.checkout.path, self.profile, self.target, self.log_path, dbt_vars, target_path)

    def _selection(self) -> list[str]:
        return project.selection(self.payload.select, self.payload.exclude, self.payload.full_refresh)

    # -- packages ---------------------------------------------------------------------

    def _deps_if_needed(self) -> str | None:
        """Install dbt packages if the project declares some and they are missing (or asked to)."""
        if self.verb == "deps" or project.needs_deps(self.checkout.path):
            if not self.handler.settings.transform.allow_package_downloads:
                project.refuse_downloads(self.checkout)
            args = self._common_args(self.command.job_id or "adhoc", with_target_path=False)
            result = self.handler.runner.invoke(self._invocation("deps", args, with_manifest=False))
            if not result.success:
                raise TransformFailed(
                    f"dbt deps failed at {self.checkout.sha[:12]}: {_short(result.error or 'see dbt log')}",
                    logic_version=self.checkout.sha,
                )
        return project.package_lock(self.checkout.path)

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
            made = self.verb in BUILDING_ACTIONS and status == "success" and node.resource_type in RELATIONAL
            if made and node.relation:
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
        return project.package_lock(self.checkout.path)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


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


def _with_outcome(outcome: Outcome, error: PudatoError) -> PudatoError:
    error.outcome = outcome
    return error
