"""Every request to a route is audited once: who, what, on which tenant and node, with
which outcome, from which address.

A route that changes something writes its audit row itself, inside the transaction of
the change (`audit_change`), so the change and its record commit together. Every other
request (reads, refusals, invalid input, failures) is recorded after the response by
`AuditMiddleware`, from what the dependencies noted on `request.state`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import JSONResponse, Response

from control_api import audit
from control_api.metrics import ApiMetrics

log = logging.getLogger(__name__)

NOT_AUDITED = {"/health", "/readiness", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc"}
NOT_AUDITED |= {"/openapi.json"}


def outcome_for(status_code: int, denied: bool) -> str:
    if denied or status_code in (401, 403):
        return "denied"
    if status_code < 400:
        return "ok"
    return {404: "not_found", 409: "conflict", 422: "invalid", 400: "invalid"}.get(
        status_code, {429: "rate_limited", 503: "unavailable"}.get(status_code, "error")
    )


def _entry(
    request: Request, action: str, status_code: int, params: dict[str, Any]
) -> audit.AuditEntry:
    state = request.state
    principal = getattr(state, "principal", None)
    # A tenant user's rows belong to their own tenant, even when they probed another's
    # object: the other tenant's operators must not read who was probing.
    if principal is not None and not principal.is_admin:
        tenant_id = principal.tenant_id
    else:
        tenant_id = getattr(state, "audit_tenant_id", None)
    return audit.AuditEntry(
        action=action,
        outcome=outcome_for(status_code, getattr(state, "denied", False)),
        actor_user_id=principal.id if principal else None,
        actor_email=principal.email if principal else getattr(state, "audit_email", None),
        tenant_id=tenant_id,
        node_id=getattr(state, "audit_node_id", None),
        params=params,
        status_code=status_code,
        client_addr=request.client.host if request.client else None,
    )


def audit_change(
    conn: Connection, request: Request, status_code: int, params: dict[str, Any]
) -> None:
    """The audit row of a successful change, in the change's own transaction."""
    route = request.scope.get("route")
    action = getattr(route, "name", request.url.path)
    audit.append(conn, _entry(request, action, status_code, params))
    request.state.audited = True


class AuditMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: Any, engine: Engine, metrics: ApiMetrics) -> None:
        super().__init__(app)
        self.engine = engine
        self.metrics = metrics

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        # Set by the router once a route matched; absent for unknown paths.
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(template, request.method, str(response.status_code)).inc()
        if route is None or template in NOT_AUDITED or getattr(request.state, "audited", False):
            return response
        params = {"path": dict(request.scope.get("path_params", {}))}
        if request.query_params:
            params["query"] = dict(request.query_params)
        entry = _entry(request, route.name, response.status_code, params)
        try:
            await run_in_threadpool(self._append, entry)
        except Exception:  # no unaudited answer leaves: refuse it instead, loudly
            log.exception("could not write the audit row for %s %s", request.method, template)
            return JSONResponse({"detail": "audit log unavailable"}, status_code=503)
        return response

    def _append(self, entry: audit.AuditEntry) -> None:
        with self.engine.begin() as conn:
            audit.append(conn, entry)
