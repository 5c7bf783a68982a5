"""Celery's result backend on the registry database, with counter-based chords.

Celery's own database backend completes a chord by polling: ``chord_unlock`` is
sent with a one-second countdown and then retries, so a chord costs a second
or more. Redis avoids that with an atomic counter, and so does this backend: it
is a key-value backend (``implements_incr``) over the ``celery_results`` table,
whose ``incr`` is one upsert. The last header task to finish sends the body.

A database outage never blocks a task. Storing a task's result is tried once
on the task's path; if the database is away, it is handed to a background
drain that waits the outage out, and the task (and the next one) goes on. A
chord header's part (the counter, and the body once the last part is in) is
always done on that drain, in order after the results before it, so chords
complete once the database is back. Reads (``AsyncResult.get``) wait out an
outage of up to ``MAX_OUTAGE_S``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from celery import signals
from celery.backends.base import KeyValueStoreBackend
from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pudato.background import Drain
from pudato.backoff import Backoff
from pudato.protocol import utcnow
from pudato.registry.database import get_engine
from pudato.registry.models import ResultEntry
from pudato.registry.recorder import is_outage
from pudato.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_OUTAGE_S = 600.0
_table = cast(Table, ResultEntry.__table__)
_attempt = threading.local()  # .once: operations on this thread try the database once, then raise


class RegistryResultBackend(KeyValueStoreBackend):
    implements_incr = True
    supports_native_join = True
    supports_autoexpire = False

    def __init__(self, *args: Any, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registry_url = get_settings().registry.url
        self.deferred = Drain("result-backend", _run_all, is_transient=is_outage, batch_size=1, max_backoff_s=2.0)
        for stopping in (signals.worker_process_shutdown, signals.worker_shutdown):
            stopping.connect(self._flush_deferred, weak=False)

    # -- off the task's path ---------------------------------------------------------

    def _store_result(self, task_id: Any, result: Any, state: Any, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        store = functools.partial(super()._store_result, task_id, result, state, traceback, request, **kwargs)
        if self.deferred.pending:  # behind what already waits for the database, in order
            self.deferred.put(store)
            return result
        _attempt.once = True
        try:
            return store()
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning("result backend: registry unavailable; the result of %s is stored once it is back", task_id)
            self.deferred.put(store)
            return result
        finally:
            _attempt.once = False

    def on_chord_part_return(self, request: Any, state: Any, result: Any, **kwargs: Any) -> None:
        self.deferred.put(functools.partial(super().on_chord_part_return, request, state, result, **kwargs))

    def _flush_deferred(self, **_: Any) -> None:
        self.deferred.close(timeout=10.0)

    # -- the key-value primitives Celery builds on --------------------------------

    def get(self, key: bytes | str) -> bytes | None:
        row = self._retrying(lambda c: c.execute(select(_table.c.value).where(_table.c.key == _text(key))).first())
        return row[0] if row else None

    def mget(self, keys: list[bytes | str]) -> list[bytes | None]:
        names = [_text(k) for k in keys]
        rows = self._retrying(
            lambda c: dict(c.execute(select(_table.c.key, _table.c.value).where(_table.c.key.in_(names))).all())
        )
        return [rows.get(name) for name in names]

    def set(self, key: bytes | str, value: bytes | str) -> None:
        data = value.encode() if isinstance(value, str) else value
        expires = utcnow() + timedelta(seconds=self.expires) if self.expires else None
        self._retrying(lambda c: c.execute(self._upsert(_text(key), {"value": data, "expires_at": expires})))

    def delete(self, key: bytes | str) -> None:
        self._retrying(lambda c: c.execute(delete(_table).where(_table.c.key == _text(key))))

    def incr(self, key: bytes | str) -> int:
        statement = self._upsert(_text(key), {"counter": 1}, increment=True).returning(_table.c.counter)
        return int(self._retrying(lambda c: c.execute(statement).scalar_one()))

    def expire(self, key: bytes | str, value: int | float | None) -> None:
        expires = utcnow() + timedelta(seconds=value) if value else None
        self._retrying(
            lambda c: c.execute(update(_table).where(_table.c.key == _text(key)).values(expires_at=expires))
        )

    def cleanup(self) -> None:
        """Delete expired results (run daily by beat's ``celery.backend_cleanup``)."""
        now = utcnow()
        self._retrying(lambda c: c.execute(delete(_table).where(_table.c.expires_at < now)))

    # -- helpers -----------------------------------------------------------------

    def _upsert(self, key: str, values: dict[str, Any], increment: bool = False) -> Any:
        engine = get_engine(self.registry_url)
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_table).values(key=key, counter=values.pop("counter", 0), **values)
        changes = {"counter": _table.c.counter + 1} if increment else values
        return insert.on_conflict_do_update(index_elements=[_table.c.key], set_=changes)

    def _retrying(self, operation: Callable[[Any], T]) -> T:
        backoff = Backoff(0.2, 2.0, MAX_OUTAGE_S, jitter=(0.5, 1.0))
        while True:
            try:
                with get_engine(self.registry_url).begin() as connection:
                    return operation(connection)
            except Exception as exc:
                delay = backoff.next_delay() if is_outage(exc) and not getattr(_attempt, "once", False) else None
                if delay is None:
                    raise
                log.warning("result backend: registry unavailable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)


def _run_all(operations: list[Callable[[], Any]]) -> None:
    while operations:  # pop only once done: after an outage the drain resumes at the first not done
        operations[0]()
        operations.pop(0)


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
