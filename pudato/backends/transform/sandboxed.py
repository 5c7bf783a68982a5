"""dbt in a warm child process with nothing of the worker's but what a build needs.

Each worker process owns one child (``python -m pudato.backends.transform.child``),
started on its first step and kept warm, so the parsed manifest of a commit stays
cached between steps; it is recycled after ``recycle_after`` invocations, and
replaced if it dies. The child gets:

* a scrubbed environment: ``PATH``, a private ``HOME`` and ``TMPDIR``, and only
  the variables ``PUDATO_TRANSFORM__ENV_VARS`` names, so ``env_var()`` cannot
  read the AWS keys, the registry URL or anything else of the platform's;
* a private temp folder (mode 0700, removed with the child), holding the profile;
* the build's credentials only as DuckDB secrets in that profile (the lake's S3
  keys, scoped to the lake's data prefix, and the catalog's password as a
  PostgreSQL secret: never in an ATTACH string, never in the environment);
* DuckDB locked down once the warehouse is attached (:mod:`.lockdown`): no file
  or URL outside the lake's data, the project and the temp folder, no new
  ATTACH, no extension loading, no switching the settings back;
* a network of its own (``isolate_network``, :mod:`.isolation`): user,
  network, mount and pid namespaces where only the lake's S3 endpoint and the
  catalog answer, through a relay in the worker (:mod:`.relay`);
* a network guard on its Python code (:mod:`.network`): sockets only to the
  lake's S3 endpoint and the catalog (``network``; None leaves the network open,
  for package downloads, and the child in the worker's network).

Python models and hooks are refused in the child, on the parsed manifest
(:mod:`.policy`), unless the settings allow them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

import pudato
from pudato import errors
from pudato.backends.transform import (
    SANDBOX_PREFIX,
    DbtInvocation,
    DbtResult,
    TransformFailed,
    TransformRefused,
    TransformRunner,
)
from pudato.backends.transform.isolation import command as isolation_command
from pudato.backends.transform.isolation import listen_addresses, secret_paths
from pudato.backends.transform.network import sandbox_endpoints
from pudato.backends.transform.relay import Relay
from pudato.errors import ConfigurationError
from pudato.settings import Settings, environment_values

_LOCKDOWN_PLUGIN = "pudato.backends.transform.lockdown"
_STDERR_TAIL = 2_000
_NETWORK_READY_S = 60.0  # the child's first words, on a busy machine: Python starting, namespaces made
_BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
}
_ERRORS: dict[str, type[errors.PudatoError]] = {
    "TransformFailed": TransformFailed,
    "TransformRefused": TransformRefused,
    "UnsafeInput": errors.UnsafeInput,
    "InvalidCommand": errors.InvalidCommand,
    "ConfigurationError": errors.ConfigurationError,
    "BackendUnavailable": errors.BackendUnavailable,
}


class _ChildGone(Exception):
    """The child had died before it was sent the request: safe to send it to a new one."""


class _Child:
    """One child process, its private folder, and (isolated) the relay to its endpoints."""

    def __init__(self, python: str, env_vars: dict[str, str], network: list[str] | None, isolate: bool) -> None:
        argv = [python, "-m", "pudato.backends.transform.child", *_network_args(network)]
        if isolate and network is not None:
            listen_addresses(network)  # an endpoint the namespace cannot name fails here, clearly
            argv = [*isolation_command(_unshare()), *argv]
        self.folder = Path(tempfile.mkdtemp(prefix=SANDBOX_PREFIX))
        env = {**_BASE_ENV, **env_vars, "HOME": str(self.folder), "TMPDIR": str(self.folder),
               "PYTHONPATH": str(Path(pudato.__file__).resolve().parents[1])}  # fmt: skip
        self.stderr = open(self.folder / "stderr.log", "w+b")  # noqa: SIM115 - lives as long as the child
        ours, theirs = socket.socketpair() if isolate and network is not None else (None, None)
        if theirs is not None:
            hidden = secret_paths(Path.home(), Path.cwd())
            argv = [*argv, "--channel-fd", str(theirs.fileno()), *(arg for path in hidden for arg in ("--hide", path))]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            env=env, cwd=self.folder, close_fds=True, pass_fds=() if theirs is None else (theirs.fileno(),),
        )  # fmt: skip
        self.pid, self.invocations = os.getpid(), 0
        self.relay = None if ours is None else self._relay(ours, theirs, network or [])
        # The folder goes when the runner is dropped or the worker exits, whichever comes first.
        self._finalizer = weakref.finalize(self, _stop, self.process, self.folder, self.stderr, self.pid, self.relay)

    def _relay(self, ours: socket.socket, theirs: socket.socket | None, network: list[str]) -> Relay:
        if theirs is not None:
            theirs.close()  # the child's end: kept open here, it would hide the child's death
        try:
            with ours:
                return Relay.receive(ours, network, timeout_s=_NETWORK_READY_S)
        except OSError as exc:
            self.process.kill()
            self.process.wait(timeout=30)
            tail = self.stderr_tail()
            self.stderr.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise ConfigurationError(
                f"the transform sandbox could not give dbt a network of its own ({exc}; {tail}): this host must "
                "allow user and network namespaces (util-linux unshare; in a container, a seccomp profile that "
                "permits them), or set PUDATO_TRANSFORM__NETWORK_ISOLATION=hook to rely on the Python audit hook only"
            ) from None

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        # A ping first: a child that died since the last step (and whose pipes a grandchild may
        # still hold open) is found before it is sent work it might half do.
        if self._send({"ping": True}) != {"pong": True}:
            raise _ChildGone
        line = self._send_line(request)
        self.invocations += 1
        if not line:
            code = self.process.wait(timeout=30)
            raise TransformFailed(
                f"the sandboxed dbt process exited (code {code}) before answering: {self.stderr_tail()}",
                exit_code=code,
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _send(self, request: dict[str, Any]) -> dict[str, Any] | None:
        line = self._send_line(request)
        return json.loads(line) if line else None

    def _send_line(self, request: dict[str, Any]) -> bytes:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write((json.dumps(request, default=str) + "\n").encode())
            stdin.flush()
            return stdout.readline()
        except OSError:
            return b""

    def stderr_tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - _STDERR_TAIL))
        return self.stderr.read().decode(errors="replace").strip() or "(no output)"

    def close(self) -> None:
        self._finalizer()


def _network_args(network: list[str] | None) -> list[str]:
    if network is None:
        return ["--any-network"]
    return [arg for endpoint in network for arg in ("--network", endpoint)]


def _unshare() -> str:
    found = shutil.which("unshare")
    if found is None:
        raise ConfigurationError(
            "the transform sandbox runs dbt in namespaces of its own with util-linux's unshare, which is not "
            "installed: install util-linux, or set PUDATO_TRANSFORM__NETWORK_ISOLATION=hook"
        )
    return found


def _stop(process: subprocess.Popen[bytes], folder: Path, stderr: IO[bytes], pid: int, relay: Relay | None) -> None:
    if relay is not None:
        relay.close()
    if pid == os.getpid():  # a child made before a fork belongs to the parent
        _close_quietly(process.stdin)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        _close_quietly(process.stdout)
        shutil.rmtree(folder, ignore_errors=True)
    stderr.close()


def _close_quietly(stream: IO[bytes] | None) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:
        pass


class SandboxedRunner(TransformRunner):
    """dbt in a warm child process per worker process, recycled after ``recycle_after`` invocations."""

    kind: ClassVar[str] = "sandboxed"

    def __init__(self, env_vars: dict[str, str] | None = None, recycle_after: int = 200,
                 python: str = sys.executable, network: Sequence[str] | None = (),
                 isolate_network: bool = True) -> None:  # fmt: skip
        """``network``: the ``host:port`` endpoints the child may reach (default none); None: any.

        ``isolate_network``: the operating system enforces ``network`` (namespaces); False leaves
        it to the Python audit hook.
        """
        self.env_vars = dict(env_vars or {})
        self.network = None if network is None else list(dict.fromkeys(network))  # one listener an endpoint
        self.isolate_network = isolate_network
        self.recycle_after = recycle_after
        self.python = python
        self._child: _Child | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxedRunner:
        transform = settings.transform
        network = None if transform.allow_package_downloads else sandbox_endpoints(settings)
        return cls(environment_values(transform.env_vars), transform.recycle_after, network=network,
                   isolate_network=transform.network_isolation == "namespace")  # fmt: skip

    def invoke(self, invocation: DbtInvocation) -> DbtResult:
        with self._lock:
            try:
                answer = self._call(invocation)
            except _ChildGone:
                answer = self._call(invocation)  # it died between steps: the step goes to a new one
            if self._child is not None and self._child.invocations >= self.recycle_after:
                self._drop()
        if "error" in answer:
            error = answer["error"]
            cls = _ERRORS.get(str(error.get("type")), TransformFailed)
            raise cls(str(error.get("message")), **(error.get("details") or {}))
        result = answer["result"]
        return DbtResult(
            bool(result["success"]), result.get("error"), result.get("results") or [], bool(result.get("parsed"))
        )

    def _call(self, invocation: DbtInvocation) -> dict[str, Any]:
        child = self._ready_child()
        try:
            return child.call({"invocation": self._locked_down(invocation, child.folder).to_json()})
        except BaseException:
            # Interrupted (a soft time limit) or the child died: it may be mid-query, so it goes now.
            child.process.kill()
            self._drop()
            raise

    @property
    def child_pid(self) -> int | None:
        """The child's process id, while one runs (for tests and monitoring)."""
        child = self._child
        return child.process.pid if child is not None and child.process.poll() is None else None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _ready_child(self) -> _Child:
        child = self._child
        if child is not None and (child.pid != os.getpid() or child.process.poll() is not None):
            self._drop()
            child = None
        if child is None:
            child = self._child = _Child(self.python, self.env_vars, self.network, self.isolate_network)
        return child

    def _drop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.close()

    @staticmethod
    def _locked_down(invocation: DbtInvocation, folder: Path) -> DbtInvocation:
        """The invocation with DuckDB confined to the lake's data, the project and ``folder``."""
        output = dict(invocation.output)
        attachments = [*(output.get("attach") or [])]
        data_paths = [str((a.get("options") or {}).get("data_path")) for a in attachments
                      if (a.get("options") or {}).get("data_path")]  # fmt: skip
        allowed = [*data_paths, str(Path(invocation.project_dir).resolve()) + "/", str(folder) + "/"]
        config_options = {**(output.get("config_options") or {}), "temp_directory": str(folder / "duckdb")}
        config: dict[str, Any] = {"allowed_directories": sorted(set(allowed))}
        if config_options.get("max_temp_directory_size"):
            config["max_temp_directory_size"] = str(config_options["max_temp_directory_size"])
        output["plugins"] = [*(output.get("plugins") or []), {"module": _LOCKDOWN_PLUGIN, "config": config}]
        output["config_options"] = config_options
        return DbtInvocation(**{**invocation.__dict__, "output": output})
