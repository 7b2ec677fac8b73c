"""Reading the database as a tenant's Grafana role."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.services import Database


def create_tenant_role(db: Database, tenant_id: int, role: str) -> str:
    """Creates the tenant's login role with the schema's function; returns its password."""
    password = secrets.token_urlsafe(16)
    with db.connect() as conn:
        conn.execute(
            "SELECT tenant_view.ensure_tenant_role(%s, %s, %s)", (tenant_id, role, password)
        )
    return password


@contextmanager
def as_role(db: Database, role: str, password: str) -> Iterator[Any]:
    """A connection whose queries run as `role`.

    Against a native TimescaleDB this logs in as the role. The embedded server has one
    shared session and no real logins, so there the role is taken with SET LOCAL ROLE
    inside a transaction that is rolled back afterwards.
    """
    if db.embedded:
        with db.connect() as conn, conn.transaction(force_rollback=True):
            # What a login would apply: the role's own settings (its search_path).
            settings = conn.execute(
                "SELECT unnest(setconfig) FROM pg_db_role_setting s"
                " JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s",
                (role,),
            ).fetchall()
            conn.execute(f'SET LOCAL ROLE "{role}"')
            for (setting,) in settings:
                name, _, value = setting.partition("=")
                conn.execute(f"SELECT set_config('{name}', %s, true)", (value,))
            yield conn
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(
        make_conninfo(db.url, user=role, password=password), autocommit=True
    ) as conn:
        yield conn
