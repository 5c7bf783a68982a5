"""A dbt-duckdb plugin that locks DuckDB down once the warehouse is attached.

dbt-duckdb attaches the profile's databases when it opens its instance, then
configures each cursor; this plugin's first cursor switches external access off,
leaves only ``allowed_directories`` reachable (the lake's data prefix, the
project's seeds, the sandbox's temp folder) and locks the configuration, so the
repository's SQL cannot read ``/etc/passwd``, attach another database, load an
extension or switch any of it back. The catalog (PostgreSQL) stays reachable
through the lake attached before the lock.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Plugin(BasePlugin):
    """Configured with ``allowed_directories`` (a list of folders or URL prefixes) and the instance's
    ``max_temp_directory_size``, set before the lock."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.allowed = [str(folder) for folder in plugin_config.get("allowed_directories") or []]
        self.max_temp_directory_size = plugin_config.get("max_temp_directory_size")

    def configure_cursor(self, cursor: Any) -> None:
        locked = cursor.execute("SELECT current_setting('lock_configuration')").fetchone()
        if locked and locked[0]:
            return  # the instance is already locked (settings are per instance, cursors share them)
        if self.max_temp_directory_size:
            # duckdb 1.5.5 shows the value given at connect but enforces only one SET afterwards.
            cursor.execute(f"SET max_temp_directory_size = {_literal(str(self.max_temp_directory_size))}")
        cursor.execute(f"SET allowed_directories = [{', '.join(_literal(f) for f in self.allowed)}]")
        cursor.execute("SET enable_external_access = false")
        cursor.execute("SET lock_configuration = true")
