"""What the handlers that work on the warehouse share: storage and the DuckDB file."""

from __future__ import annotations

from pudato.backends.storage import StorageBackend, storage_backend
from pudato.backends.warehouse import WarehouseBackend, warehouse_backend
from pudato.handlers.base import Handler
from pudato.protocol import Command
from pudato.settings import Settings, get_settings


class WarehouseHandler(Handler):
    """A handler that reads storage objects and the warehouse; the backends come from settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        storage: StorageBackend | None = None,
        warehouse: WarehouseBackend | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.storage = storage or storage_backend(self.settings)
        self.warehouse = warehouse or warehouse_backend(self.settings)

    def pinned_version(self, key: str, command: Command) -> str | None:
        """The version of storage object ``key`` this step must read: pinned by an exact rerun, else None."""
        pin = command.pin_for(self.storage.reference(key))
        return pin.version if pin else None
