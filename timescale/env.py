"""Alembic environment: connects with the service settings, runs raw-SQL revisions."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from contract.settings import DatabaseSettings
from timescale.database import sqlalchemy_url


def run_migrations() -> None:
    config = context.config
    settings = DatabaseSettings()
    # Programmatic callers (the test harness) pass the URL and prepare threshold in the
    # config; the command line takes them from WATTFLEET_DATABASE_*.
    url = config.get_main_option("sqlalchemy.url") or sqlalchemy_url(settings.database_url)
    prepare_threshold = config.attributes.get("prepare_threshold", settings.prepare_threshold)
    engine = create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={"prepare_threshold": prepare_threshold},
    )
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
