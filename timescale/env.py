"""Alembic environment: connects with the service settings, runs raw-SQL revisions."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from contract.settings import DatabaseSettings
from timescale.database import sqlalchemy_url


def run_migrations() -> None:
    settings = DatabaseSettings()
    url = context.config.get_main_option("sqlalchemy.url") or sqlalchemy_url(settings.database_url)
    engine = create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={"prepare_threshold": settings.prepare_threshold},
    )
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
