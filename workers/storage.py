"""Tasks of the pudato-storage queue."""

from workers.steps import handler_task

execute = handler_task("storage", "pudato.handlers.storage:StorageHandler")
