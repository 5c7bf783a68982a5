"""The storage handler: put, get, head, list, delete and copy objects."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from pydantic import Field, model_validator

from pudato import datasets
from pudato.backends.storage import StorageBackend, sha256_of_file, storage_backend
from pudato.errors import NotFound, UnsafeInput
from pudato.handlers.base import Handler, Payload, action
from pudato.protocol import Command, Event, Outcome
from pudato.reruns import check_file_unchanged
from pudato.settings import Settings, get_settings

_INLINE_LIMIT = 192 * 1024  # an SQS message holds 256 KiB in all


class PutPayload(Payload):
    key: str
    content: str | None = None
    content_base64: str | None = None
    source: str | None = Field(default=None, description="a file below one of storage.import_roots")
    content_type: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PutPayload:
        given = [n for n in ("content", "content_base64", "source") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of content, content_base64 or source")
        return self


class KeyPayload(Payload):
    key: str


class GetPayload(Payload):
    key: str
    max_bytes: int = Field(default=65536, ge=1, le=_INLINE_LIMIT)


class ListPayload(Payload):
    prefix: str = ""
    limit: int = Field(default=1000, ge=1, le=10000)


class CopyPayload(Payload):
    source_key: str
    target_key: str


class StorageHandler(Handler):
    name = "storage"

    def __init__(self, settings: Settings | None = None, backend: StorageBackend | None = None) -> None:
        self.settings = settings or get_settings()
        self.backend = backend or storage_backend(self.settings)

    @action("put", PutPayload)
    def put(self, payload: PutPayload, command: Command) -> Outcome:
        inputs = []
        if payload.source is not None:
            source = datasets.local_file(self._import_path(payload.source))
            digest = sha256_of_file(Path(source.name))
            check_file_unchanged(command.pin_for(source), digest)
            info = self.backend.put_file(payload.key, Path(source.name), payload.content_type)
            inputs.append(source.model_copy(update={"facets": {"sha256": digest}}))
        else:
            if payload.content is not None:
                data = payload.content.encode("utf-8")
            else:
                data = base64.b64decode(payload.content_base64 or "", validate=True)
            info = self.backend.put_bytes(payload.key, data, payload.content_type)
        output = self.backend.reference(payload.key, info)
        return Outcome(
            inputs=inputs,
            outputs=[output],
            data={"object": info.model_dump(exclude_none=True)},
            events=[Event(type="object.created", dataset=output)],
        )

    @action("get", GetPayload)
    def get(self, payload: GetPayload, command: Command) -> Outcome:
        version = self._pinned(payload.key, command)
        info = self.backend.head(payload.key, version)
        data = self.backend.get_bytes(payload.key, version)[: payload.max_bytes]
        try:
            body = {"content": data.decode("utf-8")}
        except UnicodeDecodeError:
            body = {"content_base64": base64.b64encode(data).decode("ascii")}
        return Outcome(
            inputs=[self.backend.reference(payload.key, info)],
            data={"object": info.model_dump(exclude_none=True), "truncated": info.size > payload.max_bytes, **body},
        )

    @action("head", KeyPayload)
    def head(self, payload: KeyPayload) -> Outcome:
        info = self.backend.head(payload.key)
        return Outcome(data={"object": info.model_dump(exclude_none=True)})

    @action("list", ListPayload)
    def list(self, payload: ListPayload) -> Outcome:
        found = self.backend.list(payload.prefix, payload.limit)
        return Outcome(data={"objects": [o.model_dump(exclude_none=True) for o in found]})

    @action("delete", KeyPayload)
    def delete(self, payload: KeyPayload) -> Outcome:
        reference = self.backend.reference(payload.key, self.backend.head(payload.key))
        self.backend.delete(payload.key)
        return Outcome(
            inputs=[reference],
            data={"deleted": payload.key},
            events=[Event(type="object.deleted", dataset=reference)],
        )

    @action("copy", CopyPayload)
    def copy(self, payload: CopyPayload, command: Command) -> Outcome:
        version = self._pinned(payload.source_key, command)
        source = self.backend.reference(payload.source_key, self.backend.head(payload.source_key, version))
        info = self.backend.copy(payload.source_key, payload.target_key, version)
        output = self.backend.reference(payload.target_key, info)
        return Outcome(
            inputs=[source],
            outputs=[output],
            data={"object": info.model_dump(exclude_none=True)},
            events=[Event(type="object.created", dataset=output)],
        )

    def _pinned(self, key: str, command: Command) -> str | None:
        pin = command.pin_for(self.backend.reference(key))
        return pin.version if pin else None

    def _import_path(self, source: str) -> Path:
        """A file a message asks us to import: it must lie below a configured import root.

        The root is chosen by where the path *says* it is (``root/source``, normalised),
        before any symbolic link is followed; a link that then leads out of that root is
        refused as such, never reported as missing from some other root.
        """
        candidate = Path(source)
        roots = [root.resolve() for root in self.settings.storage.import_roots]
        below_a_root = False
        for root in roots:
            written = Path(os.path.normpath(candidate if candidate.is_absolute() else root / candidate))
            if not written.is_relative_to(root):
                continue
            below_a_root = True
            if not (written.exists() or written.is_symlink()):
                continue  # perhaps below another root
            resolved = written.resolve()
            if not resolved.is_relative_to(root):
                raise UnsafeInput(
                    f"source {source!r} is a symbolic link, or lies below one, that leads out of the import root "
                    f"{root}: refused", source=source, root=str(root),
                )
            if not resolved.is_file():
                raise NotFound(f"source {source!r} below {root} is not a file", source=source)
            return resolved
        if below_a_root:
            raise NotFound(f"source file {source!r} does not exist below the import roots {[str(r) for r in roots]}",
                           source=source)
        raise UnsafeInput(
            f"source {source!r} is not below an import root "
            f"(PUDATO_STORAGE__IMPORT_ROOTS: {[str(r) for r in roots] or 'none set'})",
            source=source,
        )

