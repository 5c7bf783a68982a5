"""A write-ahead journal: an item is on disk before anyone is told it was taken.

A step's record must outlive the process that made it. The task's message is
acknowledged (deleted from SQS) as soon as the task returns, so a record held
only in memory dies with a SIGKILLed pool process. :class:`Journal` writes each
item to its own file (written, flushed, renamed into place) before the drain
queues it, and removes the file once the item was delivered.

Files are named ``<name>.<owner>.<stamp>.json``; each process is an owner and
holds an exclusive ``flock`` on ``<name>.<owner>.lock`` while it lives. A file
whose owner's lock is free is an orphan (its process is gone, however it died,
and a reused pid cannot pass for it): any live process claims it with an atomic
rename to its own owner, and delivers it. Keep the folder on a local disk:
``flock`` is not reliable over network filesystems.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Journal:
    """Items of one drain (``name``) in ``folder``, one file each."""

    def __init__(self, folder: Path, name: str, encode: Callable[[Any], Any], decode: Callable[[Any], Any],
                 *, sync: bool = True) -> None:
        self.folder = folder
        self.name = name
        self._encode = encode
        self._decode = decode
        self._sync = sync
        self._sequence = itertools.count()
        self._owner: str | None = None
        self._owner_pid = 0
        self._lock_fd: int | None = None

    @property
    def owner(self) -> str:
        """This process's owner name, with its lock held (made anew after a fork)."""
        if self._owner is None or self._owner_pid != os.getpid():
            if self._lock_fd is not None:  # the parent's lock, inherited: the parent keeps it held
                os.close(self._lock_fd)
            self.folder.mkdir(parents=True, exist_ok=True)
            owner = f"{os.getpid()}x{secrets.token_hex(4)}"
            fd = os.open(self._lock_path(owner), os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._owner, self._owner_pid, self._lock_fd = owner, os.getpid(), fd
        return self._owner

    def _lock_path(self, owner: str) -> Path:
        return self.folder / f"{self.name}.{owner}.lock"

    def _gone(self, owner: str) -> bool:
        """True if ``owner``'s process is gone: nobody holds its lock."""
        try:
            fd = os.open(self._lock_path(owner), os.O_RDWR)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def write(self, item: Any) -> Path:
        """Put ``item`` on disk; returns its file, to :meth:`remove` once delivered."""
        owner = self.owner
        # time_ns keeps files in order across processes; the counter breaks ties within one.
        stamp = f"{time.time_ns():020d}{next(self._sequence) % 1000:03d}"
        path = self.folder / f"{self.name}.{owner}.{stamp}.json"
        partial = path.with_suffix(".partial")
        with partial.open("w") as handle:
            handle.write(json.dumps(self._encode(item)))
            handle.flush()
            if self._sync:
                os.fsync(handle.fileno())
        os.replace(partial, path)
        return path

    def _forget_gone_owners(self, mine: str) -> None:
        # Only older locks: a process between creating its lock file and locking it looks gone.
        old = time.time() - 60
        for lock in self.folder.glob(f"{self.name}.*.lock"):
            owner = lock.name[len(self.name) + 1:-len(".lock")]
            try:
                if owner != mine and lock.stat().st_mtime < old and self._gone(owner):
                    lock.unlink(missing_ok=True)
            except OSError:
                continue

    @staticmethod
    def remove(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def orphans(self) -> list[tuple[Path, Any]]:
        """Claim the files of processes that are gone, oldest first; returns (new path, item)."""
        if not self.folder.is_dir():
            return []
        mine = self.owner
        found: list[tuple[str, Path]] = []
        gone: dict[str, bool] = {}
        for path in self.folder.glob(f"{self.name}.*.json"):
            parts = path.name[len(self.name) + 1:].split(".")
            if len(parts) != 3 or parts[0] == mine:
                continue
            if parts[0] not in gone:
                gone[parts[0]] = self._gone(parts[0])
            if not gone[parts[0]]:
                continue
            claimed = path.with_name(f"{self.name}.{mine}.{parts[1]}.json")
            try:
                path.rename(claimed)  # atomic: exactly one process claims each file
            except OSError:
                continue
            found.append((parts[1], claimed))
        self._forget_gone_owners(mine)
        items: list[tuple[Path, Any]] = []
        for _, path in sorted(found):
            try:
                items.append((path, self._decode(json.loads(path.read_text()))))
            except (OSError, ValueError) as exc:
                log.error("journal %s: unreadable entry %s set aside (%s)", self.name, path, exc)
                path.rename(path.with_suffix(".unreadable"))
        if items:
            log.warning("journal %s: recovered %d undelivered item(s) of stopped processes", self.name, len(items))
        return items
