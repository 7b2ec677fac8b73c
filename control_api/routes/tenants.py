"""Tenants (admins manage; tenant users read their own) and their Grafana database role.
The rules are in control_api/tenants.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from control_api import tenants
from control_api.deps import (
    AdminUser,
    Audited,
    CurrentUser,
    DbConn,
    SitePushes,
    SyncTenant,
    note_target,
)
from control_api.schemas import (
    DatabaseRoleOut,
    DbIdPath,
    TenantChangeOut,
    TenantIn,
    TenantOut,
    TenantPatch,
)

router = APIRouter(prefix="/tenants", tags=["tenants"])


@router.get("", response_model=list[TenantOut])
def list_tenants(user: CurrentUser, conn: DbConn) -> Any:
    return tenants.list_visible(conn, user)


@router.post("", response_model=TenantOut, status_code=201, responses={409: {}})
def create_tenant(
    body: TenantIn, _: AdminUser, conn: DbConn, record: Audited, sync: SyncTenant
) -> Any:
    return tenants.create(conn, body, record, sync)


@router.get("/{tenant_id}", response_model=TenantOut)
def get_tenant(request: Request, tenant_id: DbIdPath, user: CurrentUser, conn: DbConn) -> Any:
    note_target(request, tenant_id=tenant_id)
    return tenants.get(conn, user, tenant_id)


@router.patch("/{tenant_id}", response_model=TenantChangeOut)
def update_tenant(
    request: Request,
    tenant_id: DbIdPath,
    body: TenantPatch,
    _: AdminUser,
    conn: DbConn,
    record: Audited,
    pusher: SitePushes,
    sync: SyncTenant,
) -> Any:
    """Renames the tenant or sets its time zone: the nodes of its sites without a zone
    of their own get it pushed (`config_pushes`), and its Grafana organization shows it."""
    note_target(request, tenant_id=tenant_id)
    return tenants.update(conn, tenant_id, body, record, pusher, sync)


@router.delete("/{tenant_id}", status_code=204, responses={409: {}})
def delete_tenant(
    request: Request, tenant_id: DbIdPath, _: AdminUser, conn: DbConn, record: Audited
) -> None:
    """Only an empty tenant (no nodes, no users) can be deleted; its role goes with it."""
    note_target(request, tenant_id=tenant_id)
    tenants.delete(conn, tenant_id, record)


@router.post("/{tenant_id}/database-role", response_model=DatabaseRoleOut)
def reset_database_role(
    request: Request,
    tenant_id: DbIdPath,
    _: AdminUser,
    conn: DbConn,
    record: Audited,
    sync: SyncTenant,
) -> Any:
    """Creates the tenant's database role if missing and sets a new password: for a
    datasource managed by hand. With the Grafana sync on, the tenant's datasource is
    given the new password too."""
    note_target(request, tenant_id=tenant_id)
    return tenants.reset_database_role(conn, tenant_id, record, sync)
