"""Tasks of the pudato-transform queue: dbt on the analysts' logic repository."""

from workers.app import app
from workers.steps import handler_task

execute = handler_task(app, "transform")
