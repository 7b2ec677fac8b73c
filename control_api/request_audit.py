"""What is audited, and the audit row of each request: who, what, on which tenant and
node, with which outcome, from which address. The middleware here also owns the
request's one database connection, which the handling and the audit row share.

`needs_audit_row` is the rule: every change and every attempt at one, every refusal and
failure, every answer that carries a secret; a routine read that succeeded only when
`WATTFLEET_API_AUDIT_READS` is on.

A route that changes something writes its audit row itself, inside the transaction of
the change (`audit_change`), so the change and its record commit together. Every other
request the rule keeps (refusals, invalid input, failures, secret reads, and reads when
they are audited) is recorded after the response by `AuditMiddleware`, from what the
dependencies noted on `request.state`, on the same connection: a request checks out at
most one connection from the pool.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import Request
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from control_api import audit, auth
from control_api.api_docs import DOCS_PATHS
from control_api.metrics import ApiMetrics
from control_api.schemas import SecretOut

log = logging.getLogger(__name__)

# Probes and the API's own description: what they answer is public or about the process.
NOT_AUDITED = {"/health", "/readiness", "/metrics", *DOCS_PATHS}
READS = frozenset({"GET", "HEAD"})


def reveals_secret(route: BaseRoute) -> bool:
    model = getattr(route, "response_model", None)
    return isinstance(model, type) and issubclass(model, SecretOut)


def needs_audit_row(method: str, status_code: int, route: BaseRoute, audit_reads: bool) -> bool:
    """Whether a request to `route` answered `status_code` is audited: always, unless it
    is a probe or the docs, or a read that succeeded and carried no secret; those only
    with `audit_reads` (a node list polled, a command polled, would otherwise drown the
    changes and refusals the log is read for)."""
    if getattr(route, "path", None) in NOT_AUDITED:
        return False
    if method not in READS or status_code >= 400:
        return True
    return audit_reads or reveals_secret(route)


class RequestConnection:
    """One request's database connection: checked out of the pool on first use (requests
    that never touch the database take none), then shared by everything that handles the
    request, and returned once at its end. Used by one thread at a time: a request's
    dependencies, route and audit row run one after the other."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    @property
    def opened(self) -> bool:
        return self._conn is not None

    def get(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def close(self) -> None:
        """Returns the connection to the pool; what is left uncommitted is rolled back."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_OUTCOMES: dict[int, audit.Outcome] = {
    400: "invalid",
    404: "not_found",
    409: "conflict",
    413: "invalid",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def outcome_for(status_code: int, denied: bool) -> audit.Outcome:
    if denied or status_code in (401, 403):
        return "denied"
    if status_code < 400:
        return "ok"
    return _OUTCOMES.get(status_code, "error")


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


def audit_change(conn: Connection, request: Request, params: dict[str, Any]) -> None:
    """The audit row of a successful change, in the change's own transaction, with the
    status the route answers on success."""
    route = request.scope.get("route")
    action = getattr(route, "name", request.url.path)
    status_code = getattr(route, "status_code", None) or 200
    audit.append(conn, _entry(request, action, status_code, params))
    request.state.audited = True


# Answers given before a route's dependencies ran (its body too large, not JSON, or nested
# too deep), so before the caller was authenticated: its row names them from the token.
REFUSED_BEFORE_AUTH = frozenset({400, 413, 422})


def _bearer_principal(db: RequestConnection, request: Request, secret: str) -> Any:
    """Whom a request's bearer token names, when it is valid (else None)."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return auth.bearer_principal(db.get(), token, secret)
    except Exception:  # the database away: the row itself cannot be written either (503)
        log.exception("could not look up the caller of a refused request")
        return None


class AuditMiddleware(BaseHTTPMiddleware):
    def __init__(
        self, app: Any, engine: Engine, metrics: ApiMetrics, audit_reads: bool, jwt_secret: str
    ) -> None:
        super().__init__(app)
        self.engine = engine
        self.metrics = metrics
        self.audit_reads = audit_reads
        self.jwt_secret = jwt_secret

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        db = RequestConnection(self.engine)
        request.state.db = db
        try:
            return await self._audited(request, call_next, db)
        finally:
            if db.opened:
                # Back to the pool even when the server cancels the request.
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(db.close)

    async def _audited(
        self, request: Request, call_next: RequestResponseEndpoint, db: RequestConnection
    ) -> Response:
        try:
            response = await call_next(request)
        except Exception:  # a bug, not the caller's: answered 500, and still audited once
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            response = JSONResponse({"detail": "internal error"}, status_code=500)
        # Set by the router once a route matched; absent for unknown paths.
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        self.metrics.requests_total.labels(
            template, request.method, str(response.status_code)
        ).inc()
        if route is None or getattr(request.state, "audited", False):
            return response
        if not needs_audit_row(request.method, response.status_code, route, self.audit_reads):
            return response
        params = {"path": dict(request.scope.get("path_params", {}))}
        if request.query_params:
            params["query"] = dict(request.query_params)
        # What a refused change attempted, as its route noted it (audit.NoteAttempt).
        params.update(getattr(request.state, "audit_attempt", {}))
        state = request.state
        if getattr(state, "principal", None) is None and (
            response.status_code in REFUSED_BEFORE_AUTH
        ):
            state.principal = await run_in_threadpool(
                _bearer_principal, db, request, self.jwt_secret
            )
        entry = _entry(request, route.name, response.status_code, params)
        try:
            await run_in_threadpool(_append, db, entry)
        except Exception:  # no unaudited answer leaves: refuse it instead, loudly
            log.exception("could not write the audit row for %s %s", request.method, template)
            return JSONResponse({"detail": "audit log unavailable"}, status_code=503)
        return response


def _append(db: RequestConnection, entry: audit.AuditEntry) -> None:
    conn = db.get()
    # Only what a change committed stands: a read's transaction, or a change refused
    # halfway, ends here, before the row's own transaction.
    conn.rollback()
    with conn.begin():
        audit.append(conn, entry)
