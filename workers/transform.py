"""Tasks of the pudato-transform queue (dbt; the handler arrives with the transform issue)."""

from workers.steps import handler_task

execute = handler_task("transform", "pudato.handlers.transform:TransformHandler")
