"""A background drain: hand items to a thread that delivers them in order, in batches.

Recording steps and publishing to SNS must stay off a task's critical path, and
an outage of the thing they deliver to must neither crash the worker nor lose
an item. A :class:`Drain` queues items in memory; its thread delivers them in
batches and, when delivery fails with a transient error, waits and tries the
same batch again, for as long as it takes. At shutdown, whatever could not be
delivered is written to a spool folder, and the next drain with that name
picks it up first. A drain given a :class:`~pudato.journal.Journal` writes each
item to disk before :meth:`Drain.put` returns, so not even a SIGKILL loses it:
the process that next finds it orphaned delivers it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pudato.backoff import Backoff
from pudato.journal import Journal

log = logging.getLogger(__name__)

Deliver = Callable[[list[Any]], None]


class Drain:
    """Deliver items on a thread. ``is_transient`` decides which failures to wait out."""

    def __init__(
        self,
        name: str,
        deliver: Deliver,
        *,
        is_transient: Callable[[BaseException], bool],
        encode: Callable[[Any], Any] = lambda item: item,
        decode: Callable[[Any], Any] = lambda item: item,
        batch_size: int = 10,
        spool_dir: Path | None = None,
        max_backoff_s: float = 5.0,
        journal: Journal | None = None,
        sweep_interval_s: float = 5.0,
    ) -> None:
        self.name = name
        self._deliver = deliver
        self._is_transient = is_transient
        self._encode = encode
        self._decode = decode
        self._batch_size = batch_size
        self._spool_dir = spool_dir
        self._max_backoff_s = max_backoff_s
        self._journal = journal
        self._sweep_interval_s = sweep_interval_s
        self._next_sweep = 0.0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.delivered = 0
        self.dropped = 0

    def put(self, item: Any) -> None:
        """Queue ``item``; with a journal, it is on disk when this returns."""
        self._ensure_thread()
        path = self._journal.write(item) if self._journal is not None else None
        self._enqueue(item, path)

    @property
    def pending(self) -> int:
        """Items queued and not yet delivered."""
        return self._pending

    def start(self) -> None:
        """Start the thread now (it also picks up spooled and orphaned items) instead of at the first put."""
        self._ensure_thread()

    def _enqueue(self, item: Any, path: Path | None) -> None:
        with self._pending_lock:
            self._pending += 1
        self._queue.put((item, path))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued item was delivered. False if time ran out."""
        deadline = time.monotonic() + timeout
        with self._pending_lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pending_lock.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered in ``timeout``, spool the rest, stop the thread."""
        delivered = self.flush(timeout)
        self._stopping.set()
        if delivered or self._journal is not None:  # journalled items are on disk already
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            # The thread spools the batch it holds once it sees the stop; wait for that.
            self._thread.join(self._max_backoff_s + 5.0)
        self._spool_remaining()

    # -- the thread ------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        if self._pid != os.getpid():  # forked: the parent's queue and thread are not ours
            self._queue = queue.Queue()
            self._pending = 0
            self._pid = os.getpid()
            self._next_sweep = 0.0
        self._stopping.clear()
        self._restore_spool()
        self._sweep()
        self._thread = threading.Thread(target=self._run, name=f"pudato-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._sweep()
                continue
            entries = [first]
            while len(entries) < self._batch_size:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            size = len(entries)
            delivered = self._deliver_with_retry([item for item, _ in entries])
            if self._journal is not None and delivered:
                self._journal.remove([path for _, path in entries if path is not None])
            with self._pending_lock:
                self._pending -= size
                self._pending_lock.notify_all()

    def _sweep(self) -> None:
        """Queue the journal entries of processes that are gone (at most every ``sweep_interval_s``)."""
        if self._journal is None or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self._sweep_interval_s
        try:
            for path, item in self._journal.orphans():
                self._enqueue(item, path)
        except Exception:  # a sweep must never stop the thread
            log.exception("%s: could not sweep the journal", self.name)

    def _deliver_with_retry(self, batch: list[Any]) -> bool:
        """Deliver ``batch``; False if it was dropped or left for the journal or spool."""
        backoff = Backoff(0.4, self._max_backoff_s, jitter=(0.5, 1.0))
        size = len(batch)  # deliver() may consume the list as it goes
        while True:
            try:
                self._deliver(batch)
                self.delivered += size
                return True
            except Exception as exc:
                if not self._is_transient(exc):
                    self.dropped += size
                    log.exception("%s: dropped %d item(s) after a permanent error", self.name, len(batch))
                    return True  # never to be delivered: the journal must not offer it again
                if self._stopping.is_set():
                    if self._journal is None:
                        self._spool(batch)
                    return False
                delay = backoff.next_delay() or 0.0
                log.warning("%s: delivery failed (%s); retrying in %.1fs", self.name, exc, delay)
                time.sleep(delay)

    # -- the spool -------------------------------------------------------------

    def _spool_remaining(self) -> None:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait()[0])
            except queue.Empty:
                break
        self._spool(items)

    def _spool(self, items: list[Any]) -> None:
        if not items or self._spool_dir is None:
            if items:
                log.error("%s: %d item(s) undelivered at shutdown and no spool folder", self.name, len(items))
            return
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        path = self._spool_dir / f"{self.name}-{os.getpid()}-{time.time_ns()}.jsonl"
        with path.open("w") as handle:
            for item in items:
                handle.write(json.dumps(self._encode(item)) + "\n")
        log.warning("%s: spooled %d undelivered item(s) to %s", self.name, len(items), path)

    def _restore_spool(self) -> None:
        if self._spool_dir is None or not self._spool_dir.is_dir():
            return
        for path in sorted(self._spool_dir.glob(f"{self.name}-*.jsonl")):
            claimed = path.with_suffix(".claimed")
            try:
                path.rename(claimed)  # rename is atomic: one process claims each file
            except OSError:
                continue
            for line in claimed.read_text().splitlines():
                self._enqueue(self._decode(json.loads(line)), None)
            claimed.unlink()
