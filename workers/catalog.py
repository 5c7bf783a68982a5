"""Tasks of the pudato-catalog queue."""

from workers.steps import handler_task

execute = handler_task("catalog", "pudato.handlers.catalog:CatalogHandler")
