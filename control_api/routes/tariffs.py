"""Tariff versions of a tenant and of a site (admins set them; the tenant's users read
them), and a site's effective timeline. The rules are in control_api/tariffs.py."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from contract.tariff import TariffVersion
from control_api import tariffs
from control_api.deps import (
    AdminUser,
    Audited,
    CurrentUser,
    DbConn,
    ScopedNode,
    SitePushes,
    note_target,
)
from control_api.schemas import (
    BackdateQuery,
    DbIdPath,
    TariffDeletedOut,
    TariffSetOut,
    TariffTimelineOut,
    TariffVersionOut,
)

router = APIRouter(tags=["tariffs"])

ValidFromPath = Annotated[date, Path(description="the version's valid_from (YYYY-MM-DD)")]
HISTORY: dict[int | str, dict[str, Any]] = {
    409: {"description": "would rewrite history without backdate=true"}
}


@router.get("/tenants/{tenant_id}/tariffs", response_model=list[TariffVersionOut])
def list_tenant_tariffs(
    request: Request, tenant_id: DbIdPath, user: CurrentUser, conn: DbConn
) -> Any:
    """The tenant's tariff versions (its sites' unless a site has its own), oldest first."""
    note_target(request, tenant_id=tenant_id)
    return tariffs.listed(conn, tariffs.tenant_scope(conn, user, tenant_id))


@router.post(
    "/tenants/{tenant_id}/tariffs", response_model=TariffSetOut, status_code=201, responses=HISTORY
)
def set_tenant_tariff(
    request: Request,
    tenant_id: DbIdPath,
    body: TariffVersion,
    user: AdminUser,
    conn: DbConn,
    record: Audited,
    pusher: SitePushes,
    backdate: BackdateQuery = False,
) -> Any:
    """Adds a version of the tenant's tariff, in force from local midnight of
    `valid_from` (today or later in the tenant's zone, unless backdate), and pushes it
    to the nodes of its sites (`config_pushes`)."""
    note_target(request, tenant_id=tenant_id)
    scope = tariffs.tenant_scope(conn, user, tenant_id)
    return tariffs.add(conn, scope, body, backdate, record, pusher)


@router.delete(
    "/tenants/{tenant_id}/tariffs/{valid_from}", response_model=TariffDeletedOut, responses=HISTORY
)
def delete_tenant_tariff(
    request: Request,
    tenant_id: DbIdPath,
    valid_from: ValidFromPath,
    user: AdminUser,
    conn: DbConn,
    record: Audited,
    pusher: SitePushes,
    backdate: BackdateQuery = False,
) -> Any:
    """Deletes a version not yet in force (one in force already: with backdate)."""
    note_target(request, tenant_id=tenant_id)
    scope = tariffs.tenant_scope(conn, user, tenant_id)
    return tariffs.delete(conn, scope, valid_from, backdate, record, pusher)


@router.get("/nodes/{node_id}/tariffs", response_model=list[TariffVersionOut])
def list_site_tariffs(node: ScopedNode, conn: DbConn) -> Any:
    """The site's own tariff versions, oldest first (its timeline: GET .../tariff)."""
    return tariffs.listed(conn, tariffs.Scope(node.tenant_id, node.id))


@router.post(
    "/nodes/{node_id}/tariffs", response_model=TariffSetOut, status_code=201, responses=HISTORY
)
def set_site_tariff(
    body: TariffVersion,
    _: AdminUser,
    node: ScopedNode,
    conn: DbConn,
    record: Audited,
    pusher: SitePushes,
    backdate: BackdateQuery = False,
) -> Any:
    """Adds a version of the site's own tariff: from the first of them on, the site's
    versions price its days instead of its tenant's. Pushed to the node."""
    return tariffs.add(conn, tariffs.Scope(node.tenant_id, node.id), body, backdate, record, pusher)


@router.delete(
    "/nodes/{node_id}/tariffs/{valid_from}", response_model=TariffDeletedOut, responses=HISTORY
)
def delete_site_tariff(
    valid_from: ValidFromPath,
    _: AdminUser,
    node: ScopedNode,
    conn: DbConn,
    record: Audited,
    pusher: SitePushes,
    backdate: BackdateQuery = False,
) -> Any:
    """Deletes a version of the site's own not yet in force (in force: with backdate)."""
    scope = tariffs.Scope(node.tenant_id, node.id)
    return tariffs.delete(conn, scope, valid_from, backdate, record, pusher)


@router.get("/nodes/{node_id}/tariff", response_model=TariffTimelineOut)
def get_effective_tariff(node: ScopedNode, conn: DbConn) -> Any:
    """The site's effective timeline in its zone: its tenant's versions until its own
    first one, then its own; each in force from local midnight of `valid_from` until
    the next one's (`valid_until`)."""
    return tariffs.effective(conn, node.id)
