"""Local-folder storage: objects are files below one root folder.

A folder keeps no versions: an object's ``version`` is its content's sha256, and
only the version still on disk can be read. Asked for another (an exact
rerun of a job whose input was overwritten since), it raises
:class:`~pudato.errors.VersionGone` and says that this backend keeps no versions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pudato import datasets
from pudato.backends.storage import ObjectInfo, StorageBackend, check_key, check_prefix, sha256_of_file
from pudato.errors import NotFound, UnsafeInput, VersionGone
from pudato.protocol import DataReference
from pudato.settings import Settings


class LocalStorage(StorageBackend):
    kind = "local"
    keeps_versions = False

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStorage:
        return cls(settings.storage.local_root)

    def reference(self, key: str, info: ObjectInfo | None = None) -> DataReference:
        return datasets.local_file(self._path(key), **(info.facets() if info else {}))

    def put_file(self, key: str, source: Path, content_type: str | None = None) -> ObjectInfo:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._replace(target, lambda tmp: shutil.copyfile(source, tmp))
        return self.head(key)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._replace(target, lambda tmp: Path(tmp).write_bytes(data))
        return self.head(key)

    def get_bytes(self, key: str, version: str | None = None) -> bytes:
        return self._existing(key, version).read_bytes()

    def head(self, key: str, version: str | None = None) -> ObjectInfo:
        info = self._head(self._existing(key), key)
        if version is not None and info.version != version:
            raise VersionGone(
                f"{self._path(key)} is no longer at version {version} (it is now {info.version}): the local "
                "storage backend keeps no versions, so an overwritten object cannot be read as recorded. "
                "Rerun with --latest-data to read it as it is now",
                dataset=f"file://{self._path(key)}", version=version,
            )
        return info

    def _head(self, path: Path, key: str) -> ObjectInfo:
        stat = path.stat()
        digest = sha256_of_file(path)
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest(),
            version=digest,  # no versions kept: the content names the one there is
            sha256=digest,
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
        )

    def list(self, prefix: str = "", limit: int = 1000) -> list[ObjectInfo]:
        check_prefix(prefix)
        found = []
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith(".pudato-tmp"):
                stat = path.stat()
                found.append(
                    ObjectInfo(
                        key=key,
                        size=stat.st_size,
                        last_modified=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
                    )
                )
                if len(found) >= limit:
                    break
        return found

    def delete(self, key: str) -> None:
        self._existing(key).unlink()

    def copy(self, source_key: str, target_key: str, version: str | None = None) -> ObjectInfo:
        return self.put_file(target_key, self._existing(source_key, version))

    @contextmanager
    def local_path(self, key: str, version: str | None = None) -> Iterator[Path]:
        yield self._existing(key, version)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            # check_key refused every '..': only a symbolic link leads out.
            raise UnsafeInput(f"object key {key!r} is a symbolic link, or lies below one, that leads out of the "
                              f"storage root {self.root}: refused", key=key)
        return path

    def _existing(self, key: str, version: str | None = None) -> Path:
        path = self._path(key)
        if not path.is_file():
            if version is not None:
                raise VersionGone(f"{path} version {version} is gone: the object was deleted, and the local "
                                  "storage backend keeps no versions", dataset=f"file://{path}", version=version)
            raise NotFound(f"object {key!r} does not exist in {self.root}", key=key)
        if version is not None:
            self.head(key, version)
        return path

    @staticmethod
    def _replace(target: Path, write: Callable[[str], object]) -> None:
        # Write beside the target, then rename: readers never see half a file.
        handle, tmp = tempfile.mkstemp(prefix=".pudato-tmp-", dir=target.parent)
        os.close(handle)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
