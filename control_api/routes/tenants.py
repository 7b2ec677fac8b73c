"""Tenants (admins manage; tenant users read their own) and their Grafana database role."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from control_api.deps import AdminUser, CurrentUser, DbEngine, hidden, note_target
from control_api.request_audit import audit_change
from control_api.schemas import (
    DatabaseRoleOut,
    DbIdPath,
    TenantIn,
    TenantOut,
    TenantPatch,
)
from control_api.tenant_roles import ensure_database_role, reset_database_password

router = APIRouter(prefix="/tenants", tags=["tenants"])

_SELECT = """
SELECT t.id, t.slug, t.name, t.created_at,
    (SELECT min(role_name) FROM tenant_roles r WHERE r.tenant_id = t.id) AS database_role
FROM tenants t
"""


def require_tenant(conn: Connection, tenant_id: int) -> None:
    """422 unless the tenant exists: for routes that attach something to a tenant (nodes,
    users)."""
    found = conn.execute(text("SELECT 1 FROM tenants WHERE id = :id"), {"id": tenant_id})
    if found.first() is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "no such tenant")


def _get(conn: Connection, tenant_id: int) -> dict[str, Any] | None:
    row = conn.execute(text(_SELECT + " WHERE t.id = :id"), {"id": tenant_id}).mappings().first()
    return dict(row) if row else None


@router.get("", response_model=list[TenantOut])
def list_tenants(user: CurrentUser, engine: DbEngine) -> Any:
    with engine.connect() as conn:
        if user.is_admin:
            return conn.execute(text(_SELECT + " ORDER BY t.id")).mappings().all()
        return (
            conn.execute(text(_SELECT + " WHERE t.id = :id"), {"id": user.tenant_id})
            .mappings()
            .all()
        )


@router.post("", response_model=TenantOut, status_code=201, responses={409: {}})
def create_tenant(request: Request, body: TenantIn, _: AdminUser, engine: DbEngine) -> Any:
    try:
        with engine.begin() as conn:
            tenant_id = conn.execute(
                text("INSERT INTO tenants (slug, name) VALUES (:slug, :name) RETURNING id"),
                body.model_dump(),
            ).scalar_one()
            ensure_database_role(conn, tenant_id)
            note_target(request, tenant_id=tenant_id)
            audit_change(conn, request, 201, body.model_dump())
            tenant = _get(conn, tenant_id)
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"tenant {body.slug!r} exists") from exc
    # Its Grafana organization, in the background (the scheduled sync retries failures);
    # the sync gives the role its password when it creates the datasource.
    request.app.state.sync_tenant(tenant_id, None)
    return tenant


@router.get("/{tenant_id}", response_model=TenantOut)
def get_tenant(request: Request, tenant_id: DbIdPath, user: CurrentUser, engine: DbEngine) -> Any:
    if not user.sees_tenant(tenant_id):
        raise hidden(request, "tenant")
    note_target(request, tenant_id=tenant_id)
    with engine.connect() as conn:
        tenant = _get(conn, tenant_id)
    if tenant is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "tenant not found")
    return tenant


@router.patch("/{tenant_id}", response_model=TenantOut)
def update_tenant(
    request: Request, tenant_id: DbIdPath, body: TenantPatch, _: AdminUser, engine: DbEngine
) -> Any:
    note_target(request, tenant_id=tenant_id)
    with engine.begin() as conn:
        updated = conn.execute(
            text("UPDATE tenants SET name = :name WHERE id = :id"),
            {"name": body.name, "id": tenant_id},
        ).rowcount
        if not updated:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "tenant not found")
        audit_change(conn, request, 200, body.model_dump())
        return _get(conn, tenant_id)


@router.delete("/{tenant_id}", status_code=204, responses={409: {}})
def delete_tenant(request: Request, tenant_id: DbIdPath, _: AdminUser, engine: DbEngine) -> None:
    """Only an empty tenant (no nodes, no users) can be deleted; its role goes with it."""
    note_target(request, tenant_id=tenant_id)
    with engine.begin() as conn:
        if _get(conn, tenant_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "tenant not found")
        in_use = conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM nodes WHERE tenant_id = :id)"
                " OR EXISTS (SELECT 1 FROM users WHERE tenant_id = :id)"
                " OR EXISTS (SELECT 1 FROM commands WHERE tenant_id = :id)"
            ),
            {"id": tenant_id},
        ).scalar()
        if in_use:
            raise HTTPException(status.HTTP_409_CONFLICT, "tenant still has nodes or users")
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
        audit_change(conn, request, 204, {})


@router.post("/{tenant_id}/database-role", response_model=DatabaseRoleOut)
def reset_database_role(
    request: Request, tenant_id: DbIdPath, _: AdminUser, engine: DbEngine
) -> Any:
    """Creates the tenant's database role if missing and sets a new password: for a
    datasource managed by hand. With the Grafana sync on, the tenant's datasource is
    given the new password too."""
    note_target(request, tenant_id=tenant_id)
    with engine.begin() as conn:
        if _get(conn, tenant_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "tenant not found")
        role = reset_database_password(conn, tenant_id)
        audit_change(conn, request, 200, {"role": role.role})
    request.app.state.sync_tenant(tenant_id, role.password)
    return role
