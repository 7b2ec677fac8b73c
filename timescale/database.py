"""Database URL handling shared by the migrations and the services."""

from __future__ import annotations


def sqlalchemy_url(database_url: str) -> str:
    """A libpq `postgresql://` URL in the form SQLAlchemy's psycopg 3 dialect wants."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {database_url!r}")
