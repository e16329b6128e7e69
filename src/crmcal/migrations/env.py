"""Alembic environment: runs migrations on a synchronous connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import crmcal.sync.tables  # noqa: F401 - registers the sync tables on Base
from crmcal.crm.tables import Base

config = context.config


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
