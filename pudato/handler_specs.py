"""The one list of handlers. Everything else is derived from it: the protocol's check of a
command's handler, pipeline validation, the per-queue settings, celeryconfig's queues and
routes, and the worker's task modules.

Adding a handler is one entry here plus its two modules: the handler
(``pudato/handlers/<name>.py``) and its task module (``workers/<name>.py``, one line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BackendKind = Literal["storage", "warehouse", "logic", "catalog"]
Pool = Literal["prefork", "threads", "solo"]


@dataclass(frozen=True)
class HandlerSpec:
    """A handler: its class, its queue's defaults and the kind of backend it works through."""

    name: str
    handler_class: str  # "module:Class", imported in the worker after the fork
    # How long the queue hides a received message: the handler's longest task, with room to spare.
    visibility_timeout_s: int
    backend_kind: BackendKind
    pool: Pool = "prefork"

    @property
    def task_name(self) -> str:
        return task_name(self.name)

    @property
    def task_module(self) -> str:
        return f"workers.{self.name}"


def task_name(handler: str) -> str:
    """The Celery task that runs ``handler``'s commands; routes match ``pudato.<handler>.*``."""
    return f"pudato.{handler}.execute"


SPECS: tuple[HandlerSpec, ...] = (
    HandlerSpec("storage", "pudato.handlers.storage:StorageHandler", 300, "storage"),
    HandlerSpec("query", "pudato.handlers.query:QueryHandler", 900, "warehouse"),
    HandlerSpec("table", "pudato.handlers.table:TableHandler", 900, "warehouse"),
    HandlerSpec("catalog", "pudato.handlers.catalog:CatalogHandler", 120, "catalog", pool="threads"),
    HandlerSpec("transform", "pudato.handlers.transform:TransformHandler", 3600, "logic"),
)
BY_NAME: dict[str, HandlerSpec] = {spec.name: spec for spec in SPECS}
HANDLERS: tuple[str, ...] = tuple(BY_NAME)


def spec(handler: str) -> HandlerSpec:
    """The spec of ``handler``, or a ValueError that lists the known ones."""
    try:
        return BY_NAME[handler]
    except KeyError:
        raise ValueError(f"unknown handler {handler!r}; known handlers: {', '.join(HANDLERS)}") from None
