"""Settings: one typed model per concern, read from ``PUDATO_*`` environment variables.

Nested settings use a double underscore: ``PUDATO_STORAGE__BUCKET=raw``. A ``.env``
file in the working directory is read too. This is the only module that reads the
environment. Unknown keys are rejected, and secrets are :class:`SecretStr`, so
they never show up in a log or a record.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pudato.errors import ConfigurationError

QUEUE_PREFIX = "pudato-"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AWSSettings(_Section):
    """Where AWS is: real AWS when ``endpoint_url`` is empty, else a compatible server."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


class StorageSettings(_Section):
    backend: Literal["s3", "local"] = "s3"
    bucket: str = "pudato"
    local_root: Path = Path(".pudato/storage")
    # Folders a ``put`` may import files from; anything else a message names is refused.
    import_roots: list[Path] = Field(default_factory=list)


class WarehouseSettings(_Section):
    """The DuckDB database that the table, query and transform handlers share."""

    path: Path = Path(".pudato/warehouse.duckdb")
    lock_timeout_s: float = 60.0
    max_rows: int = 10_000


class LogicSettings(_Section):
    """The analysts' logic repositories: where checkouts are cached, which URLs are allowed."""

    cache_dir: Path = Path(".pudato/logic")
    allowed_schemes: list[str] = Field(default_factory=lambda: ["https", "ssh", "file"])
    allow_local_paths: bool = True


class RegistrySettings(_Section):
    url: str = "sqlite:///.pudato/registry.db"
    # Step records that could not be written before a worker stopped wait here.
    spool_dir: Path = Path(".pudato/spool")


class QueueSettings(_Section):
    """Per-queue settings. Visibility must outlast the queue's longest task."""

    visibility_timeout_s: int
    max_receive_count: int = 5


def _default_queues() -> dict[str, QueueSettings]:
    return {
        "storage": QueueSettings(visibility_timeout_s=300),
        "query": QueueSettings(visibility_timeout_s=900),
        "table": QueueSettings(visibility_timeout_s=900),
        "catalog": QueueSettings(visibility_timeout_s=120),
        "transform": QueueSettings(visibility_timeout_s=3600),
    }


class BrokerSettings(_Section):
    url: str | None = None  # default: built from the AWS settings
    wait_time_seconds: int = 1
    polling_interval: float = 0.1
    queues: dict[str, QueueSettings] = Field(default_factory=_default_queues)


class FanoutSettings(_Section):
    enabled: bool = True
    results_topic: str = "pudato-results"
    events_topic: str = "pudato-events"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PUDATO_",
        env_nested_delimiter="__",
        env_file=".env",
        # Other tools' variables may share the .env file (the Procfile's STACK_*): only ours are read.
        dotenv_filtering="match_prefix",
        extra="forbid",
    )

    aws: AWSSettings = Field(default_factory=AWSSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    logic: LogicSettings = Field(default_factory=LogicSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    fanout: FanoutSettings = Field(default_factory=FanoutSettings)

    def queue_name(self, handler: str) -> str:
        return f"{QUEUE_PREFIX}{handler}"

    def dead_letter_queue_name(self, handler: str) -> str:
        return f"{QUEUE_PREFIX}{handler}-dlq"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "__".join(str(part) for part in first["loc"])
        raise ConfigurationError(
            f"setting PUDATO_{field.upper()} is invalid: {first['msg']} "
            "(read from the environment and .env)",
            field=field,
        ) from None


def reset_settings() -> None:
    """Forget cached settings, after the environment changed (tests, CLI)."""
    get_settings.cache_clear()
