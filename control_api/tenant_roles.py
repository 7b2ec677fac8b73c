"""Each tenant's database login, used by its Grafana organization's datasource."""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, text

from control_api.schemas import DatabaseRoleOut


def database_role_name(tenant_id: int) -> str:
    return f"wattfleet_tenant_{tenant_id}"


def ensure_database_role(conn: Connection, tenant_id: int) -> str:
    """Creates the tenant's login role if missing (idempotent), keeping any password it
    has; returns its name. Without a password it cannot log in yet."""
    role = database_role_name(tenant_id)
    conn.execute(
        text("SELECT tenant_view.ensure_tenant_role(:tenant, :role)"),
        {"tenant": tenant_id, "role": role},
    )
    return role


def reset_database_password(conn: Connection, tenant_id: int) -> DatabaseRoleOut:
    """Ensures the role and gives it a new password."""
    role = database_role_name(tenant_id)
    password = secrets.token_urlsafe(24)
    conn.execute(
        text("SELECT tenant_view.ensure_tenant_role(:tenant, :role, :password)"),
        {"tenant": tenant_id, "role": role, "password": password},
    )
    return DatabaseRoleOut(role=role, password=password)
