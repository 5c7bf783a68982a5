"""Transform runners: where and how dbt runs a commit of the analysts' logic repository.

The transform handler decides *what* dbt does (the command line, the profile the
warehouse gives, the pins of a rerun); a runner decides *where* it runs. Two
runners, chosen by ``PUDATO_TRANSFORM__RUNNER`` from ``BACKENDS``:

* ``sandboxed`` (:mod:`.sandboxed`, the default): a warm child process owned by
  the worker, with a scrubbed environment (only ``PUDATO_TRANSFORM__ENV_VARS``),
  a private temp folder, the catalog password and S3 keys only as DuckDB secrets,
  and DuckDB locked to the warehouse's data (:mod:`.lockdown`). Recycled after
  ``PUDATO_TRANSFORM__RECYCLE_AFTER`` invocations.
* ``inprocess`` (:mod:`.inprocess`): ``dbtRunner`` in the worker itself, with the
  worker's environment. For repositories as trusted as the platform's own code.

Both run the same :class:`~pudato.backends.transform.engine.DbtEngine`: the
parsed manifest cached per commit, the repository's policy checked on it
(:mod:`.policy`: no Python models, no hooks unless allowed), a rerun's pins
applied to it (:mod:`.pins`), and the warehouse let go of after each invocation.

A request is a :class:`DbtInvocation` and the answer a :class:`DbtResult`, both
plain JSON, because the sandboxed runner sends them through a pipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pudato.backends import load_backend
from pudato.backends.warehouse.sql import FILE_LOCKED, WRITE_CONFLICTS
from pudato.backoff import Backoff
from pudato.errors import BackendUnavailable, PudatoError, TerminalError, UnsafeInput

if TYPE_CHECKING:
    from pudato.settings import Settings

BACKENDS = {
    "inprocess": "pudato.backends.transform.inprocess:InProcessRunner",
    "sandboxed": "pudato.backends.transform.sandboxed:SandboxedRunner",
}

# DuckDB's words for "another process holds the warehouse" (a file) or "committed first" (the lake):
# worth a retry, not a failure.
LOCK_CONFLICTS = (*FILE_LOCKED, *WRITE_CONFLICTS)


# The private folder of each sandboxed dbt process.
SANDBOX_PREFIX = "pudato-sandbox-"


class TransformFailed(TerminalError):
    """dbt ran and reported failure: a node errored, a test failed, or dbt itself stopped."""


class TransformRefused(UnsafeInput):
    """The repository asks for something the deployment does not allow (a Python model, a hook)."""


@dataclass(frozen=True)
class DbtInvocation:
    """One dbt command on one commit; the runner adds ``--profiles-dir``.

    ``output`` is the profile target (it holds secrets: never recorded). ``parse_args``
    parse the project when the runner has no manifest under ``manifest_key`` yet;
    None runs without a manifest (``deps``). ``pins`` and ``attached`` are a rerun's
    (see :mod:`.pins`).
    """

    command: str
    args: list[str]
    sha: str
    profile: str
    target: str
    output: dict[str, Any]
    project_dir: str
    target_path: str | None = None
    parse_args: list[str] | None = None
    manifest_key: str = ""
    pins: dict[str, int] = field(default_factory=dict)
    attached: dict[int, dict[str, Any]] = field(default_factory=dict)
    allow_python_models: bool = False
    allow_hooks: bool = False

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["attached"] = {str(k): v for k, v in self.attached.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DbtInvocation:
        data = dict(data)
        data["attached"] = {int(k): v for k, v in (data.get("attached") or {}).items()}
        return cls(**data)


@dataclass(frozen=True)
class DbtResult:
    """What dbt said: success, its exception's text, run_results.json's ``results``, and whether
    the project had to be parsed first (False when the commit's manifest was cached)."""

    success: bool
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    parsed: bool = False

    def failure(self, verb: str, sha: str, warehouse: str) -> PudatoError | None:
        """None if dbt succeeded; else TransformFailed naming the failing nodes, or BackendUnavailable
        (transient) when another process held ``warehouse`` or committed first."""
        from pudato.lineage.dbt_artifacts import FAILED_STATUSES, short

        failing = [item for item in self.results if item.get("status") in FAILED_STATUSES]
        if self.success and not failing:
            return None
        if failing:
            detail = "; ".join(f"{item['unique_id']} ({item['status']}): {short(_node_message(item), 300)}"
                               for item in failing[:10])  # fmt: skip
        else:
            detail = short(self.error or "dbt reported failure without a node result") or ""
        message = f"dbt {verb} failed at {sha[:12]}: {detail}"
        details = {"failing": [item["unique_id"] for item in failing], "logic_version": sha}
        if lock_conflict(message):
            return BackendUnavailable(
                f"warehouse {warehouse} is locked by another process, or another writer committed first: {message}",
                **details,
            )
        return TransformFailed(message, **details)


def _node_message(item: dict[str, Any]) -> str:
    """A node's message; for a Python model's traceback, its first line and the exception (what went wrong)."""
    text = str(item.get("message") or "")
    if "Traceback (most recent call last)" not in text:
        return text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{lines[0]} {lines[-1]}"


class TransformRunner:
    """The interface every runner implements."""

    kind: ClassVar[str]

    def invoke(self, invocation: DbtInvocation) -> DbtResult:
        """Run one dbt command; TransformFailed if dbt cannot even parse, TransformRefused by policy."""
        raise NotImplementedError

    def invoke_waiting(self, invocation: DbtInvocation, lock_timeout_s: float) -> DbtResult:
        """:meth:`invoke`; while another process holds the warehouse and nothing ran yet, wait and retry.

        Like the other warehouse users, a lock is waited out (jittered backoff, up to
        ``lock_timeout_s``) before the caller reports it as BackendUnavailable.
        """
        backoff = Backoff(0.05, 2.0, lock_timeout_s)
        while True:
            result = self.invoke(invocation)
            if not (lock_conflict(result.error or "") and not result.results) or not backoff.wait():
                return result

    def close(self) -> None:
        """Let go of processes and folders (a runner is usable again afterwards)."""


def lock_conflict(message: str) -> bool:
    return any(conflict in message for conflict in LOCK_CONFLICTS)


def transform_runner(settings: Settings) -> TransformRunner:
    """The runner ``settings.transform.runner`` names; an unknown name lists the known ones."""
    cls = load_backend("transform", BACKENDS, settings.transform.runner)
    runner: TransformRunner = cls.from_settings(settings)
    return runner
