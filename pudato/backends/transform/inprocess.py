"""dbt in the worker's own process: fastest, and as trusted as the worker.

The repository's SQL, Jinja and ``env_var()`` see everything the worker sees:
its environment (platform secrets included) and its files. Use it only for
repositories as trusted as the platform's own code; :mod:`.sandboxed` is the default.
"""

from __future__ import annotations

import threading
import weakref
from typing import ClassVar

from pudato.backends.transform import DbtInvocation, DbtResult, TransformRunner
from pudato.backends.transform.engine import DbtEngine
from pudato.settings import Settings

# dbt keeps global state (flags, adapters, the working directory): one invocation per process at a time.
_DBT_LOCK = threading.Lock()


class InProcessRunner(TransformRunner):
    """``dbtRunner`` in this process, with the manifest of each commit parsed once."""

    kind: ClassVar[str] = "inprocess"

    def __init__(self) -> None:
        self.engine = DbtEngine()
        # The profiles folder goes when the runner is dropped or the worker exits.
        weakref.finalize(self, self.engine.close)

    @classmethod
    def from_settings(cls, settings: Settings) -> InProcessRunner:
        return cls()

    def invoke(self, invocation: DbtInvocation) -> DbtResult:
        with _DBT_LOCK:
            return self.engine.invoke(_temp_limit_enforced(invocation))

    def close(self) -> None:
        with _DBT_LOCK:
            self.engine.close()


def _temp_limit_enforced(invocation: DbtInvocation) -> DbtInvocation:
    """The invocation with the temp-disk limit also SET on each cursor: duckdb 1.5.5 does not enforce
    it from the config given at connect (the sandbox sets it in its lockdown instead)."""
    output = dict(invocation.output)
    size = (output.get("config_options") or {}).get("max_temp_directory_size")
    if not size:
        return invocation
    output["settings"] = {**(output.get("settings") or {}), "max_temp_directory_size": str(size)}
    return DbtInvocation(**{**invocation.__dict__, "output": output})
