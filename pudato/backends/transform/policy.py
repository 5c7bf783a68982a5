"""What a logic repository may do, checked before dbt runs any of it.

* Python models run arbitrary Python in the dbt process, and hooks
  (``on-run-start``/``on-run-end``, ``pre-hook``/``post-hook``) run SQL of the
  repository's choosing around every run: both are code execution, refused
  unless the deployment turns them on (``PUDATO_TRANSFORM__ALLOW_PYTHON_MODELS``,
  ``PUDATO_TRANSFORM__ALLOW_HOOKS``). The check reads the parsed manifest.
* A symbolic link in a checkout that leads outside it would let a seed or a
  ``read_csv`` reach any file of the worker (``seeds/x.csv -> /etc/passwd``).
* Whatever is recorded from a run (compiled SQL, messages) has the platform's
  secrets redacted (:func:`redact`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pudato.errors import UnsafeInput

REDACTED = "[redacted]"
_MESSAGE_MAX = 2_000


def check_manifest(manifest: Any, sha: str, allow_python_models: bool, allow_hooks: bool) -> None:
    """TransformRefused naming the nodes, for a Python model or a hook the settings do not allow."""
    from pudato.backends.transform import TransformRefused

    python, hooks = [], []
    for uid, node in manifest.nodes.items():
        if getattr(node, "language", "sql") == "python":
            python.append(uid)
        if getattr(node, "resource_type", None) == "operation" or uid.startswith("operation."):
            hooks.append(uid)
            continue
        config = getattr(node, "config", None)
        if getattr(config, "pre_hook", None) or getattr(config, "post_hook", None):
            hooks.append(uid)
    if python and not allow_python_models:
        raise TransformRefused(
            f"the project at {sha[:12]} has Python models ({', '.join(sorted(python)[:5])}), which run any code "
            "on the worker; they are off unless PUDATO_TRANSFORM__ALLOW_PYTHON_MODELS=true",
            nodes=sorted(python)[:20],
            logic_version=sha,
        )
    if hooks and not allow_hooks:
        raise TransformRefused(
            f"the project at {sha[:12]} has hooks ({', '.join(sorted(hooks)[:5])}), which run SQL of the "
            "repository's choosing around every run; they are off unless PUDATO_TRANSFORM__ALLOW_HOOKS=true",
            nodes=sorted(hooks)[:20],
            logic_version=sha,
        )


def check_checkout(path: Path, sha: str) -> None:
    """UnsafeInput if a symbolic link in the checkout leads outside it."""
    root = path.resolve()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in [*dirs, *files]:
            entry = Path(folder) / name
            if not entry.is_symlink():
                continue
            target = entry.resolve()
            if target != root and root not in target.parents:
                relative = entry.relative_to(root)
                raise UnsafeInput(
                    f"the checkout of {sha[:12]} has a symbolic link {relative} that leads outside the repository; "
                    "a logic repository may only link to its own files",
                    path=str(relative),
                    logic_version=sha,
                )


def redact(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON-like) with every secret replaced by ``[redacted]``."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    return value


def short(value: Any, limit: int = _MESSAGE_MAX) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + f"\n-- truncated ({len(text)} characters)"
