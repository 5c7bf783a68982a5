"""Tasks of the pudato-table queue."""

from workers.steps import handler_task

execute = handler_task("table", "pudato.handlers.table:TableHandler")
