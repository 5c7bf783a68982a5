"""Tasks of the pudato-query queue."""

from workers.app import app
from workers.steps import handler_task

execute = handler_task(app, "query")
