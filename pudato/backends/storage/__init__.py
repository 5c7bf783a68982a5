"""Storage backends: S3 and a local folder, behind one small interface.

Every backend implements :class:`StorageBackend`. To add one, write a module here
with a subclass and add it to ``BACKENDS``. Keys come from messages, so every
backend checks them with :func:`check_key` before use.

Reading takes an optional ``version``: an exact rerun reads an object as it was
(``Command.pinned_inputs``). A backend that keeps versions (S3, on a versioned
bucket) reads that version or raises :class:`~pudato.errors.VersionGone`; one that
keeps none (``keeps_versions = False``: the local folder) can serve only the
version it still has, and says so when asked for another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from pudato.backends import load_backend
from pudato.errors import UnsafeInput
from pudato.protocol import DataReference

if TYPE_CHECKING:
    from pudato.settings import Settings

BACKENDS = {
    "s3": "pudato.backends.storage.s3:S3Storage",
    "local": "pudato.backends.storage.local:LocalStorage",
}

_KEY_MAX = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ObjectInfo(BaseModel):
    key: str
    size: int
    etag: str | None = None
    version: str | None = None
    sha256: str | None = None
    content_type: str | None = None
    last_modified: str | None = None

    def facets(self) -> dict[str, Any]:
        return self.model_dump(exclude={"key"}, exclude_none=True)


def check_key(key: str) -> str:
    """Refuse keys that could escape a folder or confuse a backend."""
    if not key or len(key) > _KEY_MAX:
        raise UnsafeInput(f"object key must be 1 to {_KEY_MAX} characters", key=key[:80])
    if _CONTROL.search(key):
        raise UnsafeInput("object key contains a control character", key=key[:80])
    if key.startswith("/") or "\\" in key:
        raise UnsafeInput(f"object key {key!r} must be relative and use '/'", key=key)
    if any(part in ("", ".", "..") for part in key.split("/")[:-1]) or key.split("/")[-1] in (".", ".."):
        raise UnsafeInput(f"object key {key!r} has an empty, '.' or '..' segment", key=key)
    return key


def check_prefix(prefix: str) -> str:
    return check_key(prefix + "x")[:-1] if prefix else ""


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StorageBackend:
    """The interface every storage backend implements."""

    kind: ClassVar[str]
    # Whether an object's earlier versions stay readable after it is overwritten.
    keeps_versions: ClassVar[bool]

    def reference(self, key: str, info: ObjectInfo | None = None) -> DataReference:
        raise NotImplementedError

    def put_file(self, key: str, source: Path, content_type: str | None = None) -> ObjectInfo:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        raise NotImplementedError

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        raise NotImplementedError

    def head(self, key: str, version: str | None = None) -> ObjectInfo:
        raise NotImplementedError

    def list(self, prefix: str = "", limit: int = 1000) -> list[ObjectInfo]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def copy(self, source_key: str, target_key: str, version: str | None = None) -> ObjectInfo:
        raise NotImplementedError

    def direct_url(self, key: str) -> str | None:
        """A URL the warehouse engine can read the object at in place (s3://...), or None."""
        return None

    @contextmanager
    def local_path(self, key: str, version: str | None = None) -> Iterator[Path]:
        """A local file with the object's bytes, for engines that read files."""
        raise NotImplementedError


def storage_backend(settings: Settings) -> StorageBackend:
    cls = load_backend("storage", BACKENDS, settings.storage.backend)
    backend: StorageBackend = cls.from_settings(settings)
    return backend
