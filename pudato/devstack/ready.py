"""The local stack's gate: ``pudato local wait`` holds workers, beat and Flower back until
the services answer (``--services``: moto and the registry database) or the stack is
ready for them (every queue and the bucket exist and the registry is migrated).
"""

from __future__ import annotations


def services_answer() -> str | None:
    """None when moto and the registry database answer, else what does not."""
    from sqlalchemy import text

    from pudato import aws
    from pudato.registry.database import get_engine
    from pudato.settings import get_settings

    settings = get_settings()
    try:
        aws.client("sqs", settings.aws).list_queues()
    except Exception as exc:
        return f"AWS endpoint {settings.aws.endpoint_url}: {exc}"
    try:
        with get_engine(settings.registry.url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return f"registry: {str(exc).splitlines()[0]}"
    return None


def stack_ready() -> str | None:
    """None when workers can start: every queue and the bucket exist and the registry is migrated."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from pudato import aws, infra
    from pudato.registry.database import get_engine
    from pudato.registry.migrate import alembic_config
    from pudato.settings import get_settings

    settings = get_settings()
    try:
        sqs = aws.client("sqs", settings.aws)
        for spec in infra.declared_queues(settings):
            sqs.get_queue_url(QueueName=spec.name)
        aws.client("s3", settings.aws).head_bucket(Bucket=settings.storage.bucket)
    except Exception as exc:
        return f"infrastructure: {exc}"
    url = settings.registry.url
    try:
        heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
        with get_engine(url).connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as exc:
        return f"registry: {str(exc).splitlines()[0]}"
    return None if current == heads else f"registry at {sorted(current)}, not {sorted(heads)}"
