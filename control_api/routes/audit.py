"""The audit log: admins read all of it, a tenant's operators read their tenant's rows;
admins verify the hash chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from control_api import audit
from control_api.deps import AdminUser, DbConn, OperatorUser
from control_api.schemas import (
    MAX_DB_ID,
    AuditActionQuery,
    AuditPageOut,
    AuditVerifyOut,
    DbIdQuery,
    EmailQuery,
    NodeIdQuery,
)

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=AuditPageOut)
def list_audit(
    user: OperatorUser,
    conn: DbConn,
    actor_user_id: DbIdQuery | None = None,
    actor_email: EmailQuery | None = None,
    action: AuditActionQuery | None = None,
    outcome: audit.Outcome | None = None,
    node_id: NodeIdQuery | None = None,
    tenant_id: DbIdQuery | None = None,
    since: Annotated[AwareDatetime | None, Query(description="from this time on")] = None,
    until: Annotated[AwareDatetime | None, Query(description="before this time")] = None,
    cursor: Annotated[
        int | None, Query(ge=1, le=MAX_DB_ID, description="the previous page's next_cursor")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Rows matching every filter given, newest first; the next page is the same query
    with `cursor` set to this page's `next_cursor` (null after the last page)."""
    reader_tenant = None if user.is_admin else user.tenant_id
    where = audit.AuditFilter(
        actor_user_id=actor_user_id,
        actor_email=actor_email,
        action=action,
        outcome=outcome,
        node_id=node_id,
        tenant_id=tenant_id,
        since=since,
        until=until,
    )
    found = audit.page(conn, reader_tenant, where, cursor, limit)
    return {"rows": found.rows, "next_cursor": found.next_cursor}


@router.get("/verify", response_model=AuditVerifyOut)
def verify_audit(_: AdminUser, conn: DbConn) -> AuditVerifyOut:
    """Recomputes the hash chain; `bad_rows` names every row that was altered, or whose
    predecessor was removed."""
    report = audit.verify_chain(conn)
    return AuditVerifyOut(ok=report.ok, checked=report.checked, bad_rows=report.bad_rows)
