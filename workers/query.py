"""Tasks of the pudato-query queue."""

from workers.steps import handler_task

execute = handler_task("query", "pudato.handlers.query:QueryHandler")
