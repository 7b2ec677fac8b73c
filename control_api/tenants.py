"""Tenants: admins manage them, tenant users read their own. Each has a database login
role for its Grafana datasource (control_api/tenant_roles.py) and a Grafana organization
kept by the tenant sync (control_api/grafana_sync.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from control_api import site_settings
from control_api.audit import RecordChange
from control_api.auth import Principal
from control_api.errors import ConflictError, InvalidError, NotFoundError, NotVisibleError
from control_api.schemas import DatabaseRoleOut, TenantIn, TenantPatch
from control_api.tenant_roles import ensure_database_role, reset_database_password

if TYPE_CHECKING:  # site_push issues commands, whose rules import the nodes' (and ours)
    from control_api.site_push import SitePusher

# Schedules the tenant's Grafana sync, giving its datasource this password when set.
SyncTenant = Callable[[int, str | None], None]

_SELECT = """
SELECT t.id, t.slug, t.name, t.timezone, t.created_at,
    (SELECT min(role_name) FROM tenant_roles r WHERE r.tenant_id = t.id) AS database_role
FROM tenants t
"""


def require(conn: Connection, tenant_id: int) -> None:
    """InvalidError unless the tenant exists: for changes that attach something to a
    tenant (nodes, users)."""
    found = conn.execute(text("SELECT 1 FROM tenants WHERE id = :id"), {"id": tenant_id})
    if found.first() is None:
        raise InvalidError("no such tenant")


def _find(conn: Connection, tenant_id: int) -> dict[str, Any] | None:
    row = conn.execute(text(_SELECT + " WHERE t.id = :id"), {"id": tenant_id}).mappings().first()
    return dict(row) if row else None


def _existing(conn: Connection, tenant_id: int) -> dict[str, Any]:
    tenant = _find(conn, tenant_id)
    if tenant is None:
        raise NotFoundError("tenant not found")
    return tenant


def list_visible(conn: Connection, user: Principal) -> list[dict[str, Any]]:
    """Every tenant for an admin, the user's own otherwise."""
    if user.is_admin:
        result = conn.execute(text(_SELECT + " ORDER BY t.id"))
    else:
        result = conn.execute(text(_SELECT + " WHERE t.id = :id"), {"id": user.tenant_id})
    return [dict(r) for r in result.mappings()]


def get(conn: Connection, user: Principal, tenant_id: int) -> dict[str, Any]:
    if not user.sees_tenant(tenant_id):
        raise NotVisibleError("tenant")
    return _existing(conn, tenant_id)


def create(
    conn: Connection, body: TenantIn, record: RecordChange, sync: SyncTenant
) -> dict[str, Any]:
    """The tenant and its database role (without a password until the sync gives it
    one); ConflictError when the slug is taken. Its Grafana organization follows in the
    background (the scheduled sync retries failures)."""
    try:
        tenant_id = conn.execute(
            text(
                "INSERT INTO tenants (slug, name, timezone) VALUES (:slug, :name, :timezone)"
                " RETURNING id"
            ),
            body.model_dump(),
        ).scalar_one()
        ensure_database_role(conn, tenant_id)
        record(conn, body.model_dump(), tenant_id=tenant_id)
        tenant = _existing(conn, tenant_id)
        conn.commit()
    except IntegrityError as exc:
        conn.rollback()
        raise ConflictError(f"tenant {body.slug!r} exists") from exc
    sync(tenant_id, None)
    return tenant


def update(
    conn: Connection,
    tenant_id: int,
    body: TenantPatch,
    record: RecordChange,
    pusher: SitePusher,
    sync: SyncTenant,
) -> dict[str, Any]:
    """Renames the tenant or moves it to another time zone: the nodes of sites without
    a zone of their own get the new one pushed (control_api/site_push.py), and the
    Grafana sync shows it in the tenant's organization."""
    updated = conn.execute(
        text(
            "UPDATE tenants SET name = coalesce(:name, name),"
            " timezone = coalesce(:timezone, timezone) WHERE id = :id"
        ),
        {"name": body.name, "timezone": body.timezone, "id": tenant_id},
    ).rowcount
    if not updated:
        raise NotFoundError("tenant not found")
    moved = body.timezone is not None
    pushes = pusher.stage(conn, site_settings.tenant_sites(conn, tenant_id) if moved else [])
    record(conn, {**body.model_dump(exclude_none=True), "config_pushes": pushes.audit()})
    tenant = _existing(conn, tenant_id)
    conn.commit()
    if moved:
        sync(tenant_id, None)
    return {**tenant, "config_pushes": pusher.publish(conn, pushes).out()}


def delete(conn: Connection, tenant_id: int, record: RecordChange) -> None:
    """Only an empty tenant (no nodes, users or commands) can go; its role goes with it."""
    _existing(conn, tenant_id)
    in_use = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE tenant_id = :id)"
            " OR EXISTS (SELECT 1 FROM users WHERE tenant_id = :id)"
            " OR EXISTS (SELECT 1 FROM commands WHERE tenant_id = :id)"
        ),
        {"id": tenant_id},
    ).scalar()
    if in_use:
        raise ConflictError("tenant still has nodes or users")
    roles = (
        conn.execute(
            text("DELETE FROM tenant_roles WHERE tenant_id = :id RETURNING role_name"),
            {"id": tenant_id},
        )
        .scalars()
        .all()
    )
    for role in roles:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    conn.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant_id})
    record(conn, {})
    conn.commit()


def reset_database_role(
    conn: Connection, tenant_id: int, record: RecordChange, sync: SyncTenant
) -> DatabaseRoleOut:
    """Creates the tenant's database role if missing and sets a new password, returned
    once; with the Grafana sync on, the tenant's datasource is given it too."""
    _existing(conn, tenant_id)
    role = reset_database_password(conn, tenant_id)
    record(conn, {"role": role.role})
    conn.commit()
    sync(tenant_id, role.password)
    return role
