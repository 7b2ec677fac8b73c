"""The audit log: admins read all of it, a tenant's operators read their tenant's rows;
admins verify the hash chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import text

from control_api import audit
from control_api.deps import AdminUser, DbEngine, OperatorUser
from control_api.schemas import MAX_DB_ID, AuditRowOut, AuditVerifyOut

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditRowOut])
def list_audit(
    user: OperatorUser,
    engine: DbEngine,
    node_id: str | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_DB_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Newest first; page back with `before_id`."""
    with engine.connect() as conn:
        return (
            conn.execute(
                text(
                    """
                SELECT id, ts, actor_user_id, actor_email, tenant_id, node_id, action, params,
                    outcome, status_code, client_addr, hash
                FROM audit_log
                WHERE (CAST(:tenant AS bigint) IS NULL OR tenant_id = :tenant)
                  AND (CAST(:node AS text) IS NULL OR node_id = :node)
                  AND (CAST(:before AS bigint) IS NULL OR id < :before)
                ORDER BY id DESC LIMIT :limit
                """
                ),
                {
                    "tenant": None if user.is_admin else user.tenant_id,
                    "node": node_id,
                    "before": before_id,
                    "limit": limit,
                },
            )
            .mappings()
            .all()
        )


@router.get("/verify", response_model=AuditVerifyOut)
def verify_audit(_: AdminUser, engine: DbEngine) -> AuditVerifyOut:
    """Recomputes the hash chain; `bad_rows` names every row that was altered, or whose
    predecessor was removed."""
    with engine.connect() as conn:
        report = audit.verify_chain(conn)
    return AuditVerifyOut(ok=report.ok, checked=report.checked, bad_rows=report.bad_rows)
