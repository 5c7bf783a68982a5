"""Settings: one typed model per concern, read from ``PUDATO_*`` environment variables.

Nested settings use a double underscore: ``PUDATO_STORAGE__BUCKET=raw``. A ``.env``
file in the working directory is read too. This is the only module that reads the
environment. Unknown keys are rejected, and secrets are :class:`SecretStr`, so
they never show up in a log or a record.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pudato.errors import ConfigurationError
from pudato.handler_specs import HANDLERS
from pudato.handler_specs import spec as handler_spec

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
    # How long an overwritten object's old version is kept (the bucket's lifecycle): the window
    # in which an exact rerun can read its inputs. Expire lake snapshots no sooner than this.
    version_retention_days: int = Field(default=90, ge=1)


class WarehouseSettings(_Section):
    """The warehouse the table, query and transform handlers share.

    ``backend``: ``duckdb`` (one local file, ``path``) or ``ducklake`` (a catalog
    database and data files under ``data_path``; see pudato/backends/warehouse).
    """

    backend: Literal["duckdb", "ducklake"] = "duckdb"
    # duckdb: the database file.
    path: Path = Path(".pudato/warehouse.duckdb")
    # How long an operation waits out another process's lock (duckdb) or retries a write conflict (ducklake);
    # also PostgreSQL's lock_timeout on a lake catalog's connections.
    lock_timeout_s: float = 60.0
    max_rows: int = 10_000
    # ducklake: the catalog. A PostgreSQL URL (postgresql://user@host:port/db, the password in
    # catalog_password) or sqlite:///path. Empty: the database catalog_database on the registry's
    # PostgreSQL server, or .pudato/lake.sqlite when the registry is SQLite.
    catalog_url: str | None = None
    catalog_database: str = "pudato_lake"
    catalog_password: SecretStr | None = None
    # ducklake: where the Parquet data files go. Empty: s3://<storage bucket>/lake/ with S3 storage,
    # else .pudato/lake/ next to the local storage root.
    data_path: str | None = None
    # Where DuckDB's extensions are installed from the PyPI wheels; never downloaded.
    extension_dir: Path = Path(".pudato/duckdb_extensions")
    # Per DuckDB instance (each worker process has its own): memory, threads, spill to disk.
    memory_limit: str = "2GB"
    threads: int = Field(default=2, ge=1)
    # Spill folder (empty: DuckDB's default beside the database, or .tmp for in-memory) and its cap.
    temp_directory: Path | None = None
    max_temp_directory_size: str = "10GB"
    # The largest query result returned inline (JSON bytes); larger ones must be written to storage.
    max_result_bytes: int = Field(default=4_000_000, ge=1)


class LogicSettings(_Section):
    """The analysts' logic repositories: where checkouts are cached, which URLs are allowed.

    ``allowed_hosts``: the hosts a repository URL may name (``github.com``, or
    ``*.example.org`` for a domain and its subdomains); empty allows no remote host.
    ``allow_local_paths`` covers both ``/path`` and ``file://``. Git gives up on a
    remote that connects slower than ``connect_timeout_s`` or sends less than
    ``low_speed_limit_bytes`` a second for ``low_speed_time_s``, and on any command
    after ``timeout_s``.
    """

    cache_dir: Path = Path(".pudato/logic")
    allowed_schemes: list[str] = Field(default_factory=lambda: ["https", "ssh", "file"])
    allowed_hosts: list[str] = Field(default_factory=list)
    allow_local_paths: bool = True
    connect_timeout_s: int = Field(default=15, ge=1)
    low_speed_limit_bytes: int = Field(default=1000, ge=1)
    low_speed_time_s: int = Field(default=30, ge=1)
    timeout_s: float = Field(default=300.0, gt=0)


class TransformSettings(_Section):
    """How dbt runs the logic repository (see pudato/backends/transform).

    ``runner``: ``sandboxed`` (a warm child process per worker with a scrubbed
    environment, DuckDB locked to the warehouse, recycled after ``recycle_after``
    invocations) or ``inprocess`` (in the worker itself: trusted repositories only).
    Python models and hooks run code or SQL of the repository's choosing before any
    lockdown applies: both are refused unless turned on. ``env_vars`` names the
    variables dbt's ``env_var()`` may see; nothing else of the worker's environment
    reaches a sandboxed dbt.
    """

    runner: Literal["sandboxed", "inprocess"] = "sandboxed"
    allow_python_models: bool = False
    allow_hooks: bool = False
    # dbt deps may fetch hub, git and tarball packages (network from the worker, to any URL).
    allow_package_downloads: bool = False
    # namespace: the dbt child runs in user, network, mount and pid namespaces of its own (util-linux
    # unshare), where only the lake's endpoints answer. hook: Python's audit hook alone (a subprocess or
    # ctypes gets past it), for hosts that allow no user namespaces.
    network_isolation: Literal["namespace", "hook"] = "namespace"
    env_vars: list[str] = Field(default_factory=list)
    recycle_after: int = Field(default=200, ge=1)
    # Credentials for dbt's builds only (least privilege): an S3 key allowed only the lake's data
    # prefix, and a PostgreSQL role allowed only the lake's catalog database. Empty: the platform's.
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    catalog_user: str | None = None
    catalog_password: SecretStr | None = None


class CatalogSettings(_Section):
    """Where the catalog handler keeps dataset descriptions: ``registry`` (the registry database)."""

    backend: Literal["registry"] = "registry"


class RegistrySettings(_Section):
    url: str = "sqlite:///.pudato/registry.db"
    # Step records that could not be written before a worker stopped wait here.
    spool_dir: Path = Path(".pudato/spool")


class QueueSettings(_Section):
    """One queue's settings. Visibility must outlast the queue's longest task.

    A task is stopped at its time limits, which stay below the visibility timeout so
    that its message is settled before SQS could hand it to another worker: at the
    soft limit (80% of the visibility timeout by default) the step fails with
    ``LimitExceeded``; at the hard limit (90%) its pool process is killed.
    """

    visibility_timeout_s: int
    max_receive_count: int = 5
    soft_time_limit_s: float
    time_limit_s: float


class _QueueOverride(_Section):
    visibility_timeout_s: int | None = None
    max_receive_count: int | None = None
    soft_time_limit_s: float | None = None
    time_limit_s: float | None = None


class _QueuesBase(_Section):
    """Per-handler queue settings; set any field alone, e.g. PUDATO_BROKER__QUEUES__QUERY__MAX_RECEIVE_COUNT."""

    def __getitem__(self, handler: str) -> QueueSettings:
        override: _QueueOverride = getattr(self, handler)
        visibility = override.visibility_timeout_s or handler_spec(handler).visibility_timeout_s
        hard = override.time_limit_s or visibility * 0.9
        if hard >= visibility:
            raise ConfigurationError(
                f"the {handler} queue's time limit ({hard:g} s) must stay below its visibility timeout "
                f"({visibility} s), or a task still running is handed to a second worker",
                field=f"broker.queues.{handler}.time_limit_s")
        return QueueSettings(
            visibility_timeout_s=visibility,
            max_receive_count=override.max_receive_count or 5,
            soft_time_limit_s=min(override.soft_time_limit_s or visibility * 0.8, hard),
            time_limit_s=hard,
        )

    def items(self) -> list[tuple[str, QueueSettings]]:
        return [(handler, self[handler]) for handler in HANDLERS]

    def values(self) -> list[QueueSettings]:
        return [queue for _, queue in self.items()]


# One field per handler, so each is settable on its own from the environment.
if TYPE_CHECKING:
    QueuesSettings = _QueuesBase
else:
    QueuesSettings = create_model(
        "QueuesSettings",
        __base__=_QueuesBase,
        **{handler: (_QueueOverride, Field(default_factory=_QueueOverride)) for handler in HANDLERS},
    )


class BrokerSettings(_Section):
    url: str | None = None  # default: built from the AWS settings
    wait_time_seconds: int = 1
    polling_interval: float = 0.1
    queues: QueuesSettings = Field(default_factory=QueuesSettings)
    # Celery task events and remote control through SNS, for Flower and `celery inspect`.
    monitoring: bool = True


class WorkerSettings(_Section):
    """Liveness for container orchestrators: each worker touches a file while its loop runs."""

    liveness_dir: Path = Path(".pudato/liveness")
    liveness_interval_s: float = 5.0


class BeatSettings(_Section):
    """Schedules from configuration, the logic repository whose pipeline files may carry
    schedules, and the lease that keeps one beat active (the others stand by)."""

    # name -> a pudato.schedules.ScheduleSpec as JSON, e.g.
    # {"nightly": {"pipeline": "la_revenue", "repo": "https://...", "cron": "0 2 * * *"}}
    schedules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    repo: str | None = None
    ref: str = "main"
    lease_ttl_s: float = 15.0


class SigningSettings(_Section):
    """The platform key that signs submitted steps (pudato.signing). Empty: derived from the registry URL."""

    key: SecretStr | None = None


class FanoutSettings(_Section):
    enabled: bool = True
    results_topic: str = "pudato-results"
    events_topic: str = "pudato-events"


class LineageSettings(_Section):
    """OpenLineage: where events go is configured the OpenLineage way (``openlineage.yml`` or
    ``OPENLINEAGE_*``, see the README); these say whether Pudato emits and under which namespace.

    ``openlineage``: ``None`` emits exactly when an OpenLineage transport is configured.
    Undelivered events wait in the registry's spool folder, like step records.
    """

    openlineage: bool | None = None
    namespace: str = "pudato"

    def emits(self) -> bool:
        if self.openlineage is not None:
            return self.openlineage
        return openlineage_configured()


def openlineage_configured() -> bool:
    """True when the OpenLineage client would find a transport: its variables or an ``openlineage.yml``."""
    import os

    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if any(os.environ.get(name) for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG")):
        return True
    if any(name.startswith("OPENLINEAGE__TRANSPORT") for name in os.environ):
        return True
    places = (Path.cwd() / "openlineage.yml", Path.home() / ".openlineage" / "openlineage.yml")
    return any(place.is_file() for place in places)


class FlowerSettings(_Section):
    """Flower's login. Flower shows every task's arguments and result, so it never runs open by mistake.

    ``basic_auth``: ``user:password`` (several, comma-separated). Without it ``pudato flower``
    refuses to start, unless ``allow_unauthenticated`` says so on purpose.
    """

    basic_auth: SecretStr | None = None
    allow_unauthenticated: bool = False


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
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    logic: LogicSettings = Field(default_factory=LogicSettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    fanout: FanoutSettings = Field(default_factory=FanoutSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    beat: BeatSettings = Field(default_factory=BeatSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    lineage: LineageSettings = Field(default_factory=LineageSettings)
    flower: FlowerSettings = Field(default_factory=FlowerSettings)

    def queue_name(self, handler: str) -> str:
        return f"{QUEUE_PREFIX}{handler}"

    def dead_letter_queue_name(self, handler: str) -> str:
        return f"{QUEUE_PREFIX}{handler}-dlq"

    def secret_values(self) -> list[str]:
        """Every secret these settings hold, to redact from what is recorded (never logged)."""
        found = [value.get_secret_value() for value in _secret_fields(self) if value.get_secret_value()]
        for url in (self.registry.url, self.broker.url or "", self.warehouse.catalog_url or ""):
            found.extend(_url_password(url))
        return sorted(set(found), key=len, reverse=True)


def _secret_fields(model: BaseModel) -> list[SecretStr]:
    found: list[SecretStr] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            found.append(value)
        elif isinstance(value, BaseModel):
            found.extend(_secret_fields(value))
    return found


def _url_password(url: str) -> list[str]:
    """A URL's password, as written and decoded (either may show up in a message)."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def environment_values(names: list[str]) -> dict[str, str]:
    """The values of the named environment variables that are set: the allow-list a sandbox passes on."""
    return {name: os.environ[name] for name in names if name in os.environ}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "__".join(str(part) for part in first["loc"])
        raise ConfigurationError(
            f"setting PUDATO_{field.upper()} is invalid: {first['msg']} (read from the environment and .env)",
            field=field,
        ) from None


def reset_settings() -> None:
    """Forget cached settings, after the environment changed (tests, CLI)."""
    get_settings.cache_clear()
