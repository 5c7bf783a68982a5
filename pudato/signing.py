"""Submitted steps carry the platform's HMAC, so that a worker can tell them from forgeries.

:func:`pudato.jobs.submit` records a job's steps as pending and signs each
step's command over its ids and everything it asks for (:data:`SIGNED_FIELDS`)
with the platform key (``PUDATO_SIGNING__KEY``). A worker verifies it before
anything is recorded under those ids: a command that names a job or a step
without a valid signature is refused and recorded in ``rejected_messages``, so
nobody who can only send to a queue can fail another job or overwrite a step's
outputs. A command with no ids (a plain ``.delay()``) needs no signature: it
becomes a job of its own.

Without ``PUDATO_SIGNING__KEY`` the key is derived from the registry URL, which
every submitter and worker already shares; it is then only as secret as that URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from pudato.settings import Settings

SIGNED_FIELDS = ("handler", "action", "payload", "job_id", "step_id", "step_name", "logic_repo", "logic_version",
                 "pinned_inputs")


def platform_key(settings: Settings) -> bytes:
    if settings.signing.key is not None:
        return settings.signing.key.get_secret_value().encode()
    return hashlib.sha256(b"pudato-step-signing\x00" + settings.registry.url.encode()).digest()


def _canonical(command: dict[str, Any]) -> bytes:
    fields = {name: command.get(name) for name in SIGNED_FIELDS}
    fields["pinned_inputs"] = fields["pinned_inputs"] or []
    fields["payload"] = fields["payload"] or {}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def sign(command: dict[str, Any], key: bytes) -> str:
    """The signature of ``command`` (a dict as sent), over :data:`SIGNED_FIELDS`."""
    return hmac.new(key, _canonical(command), hashlib.sha256).hexdigest()


def verify(command: dict[str, Any], key: bytes) -> bool:
    signature = command.get("signature")
    return isinstance(signature, str) and hmac.compare_digest(signature, sign(command, key))
