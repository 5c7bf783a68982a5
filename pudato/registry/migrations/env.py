"""Alembic environment: runs on a connection handed over by ``pudato.registry.migrate``."""

from alembic import context
from sqlalchemy import create_engine

from pudato.registry.models import Base

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata)
    context.run_migrations()
