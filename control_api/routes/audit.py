"""The audit log: admins read all of it, a tenant's operators read their tenant's rows;
admins verify the hash chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from control_api import audit
from control_api.deps import AdminUser, DbConn, OperatorUser
from control_api.schemas import MAX_DB_ID, AuditRowOut, AuditVerifyOut, NodeIdQuery

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditRowOut])
def list_audit(
    user: OperatorUser,
    conn: DbConn,
    node_id: NodeIdQuery | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Newest first; page back with `before_id`."""
    tenant_id = None if user.is_admin else user.tenant_id
    return audit.rows(conn, tenant_id, node_id, before_id, limit)


@router.get("/verify", response_model=AuditVerifyOut)
def verify_audit(_: AdminUser, conn: DbConn) -> AuditVerifyOut:
    """Recomputes the hash chain; `bad_rows` names every row that was altered, or whose
    predecessor was removed."""
    report = audit.verify_chain(conn)
    return AuditVerifyOut(ok=report.ok, checked=report.checked, bad_rows=report.bad_rows)
