"""Request dependencies: the request's database connection, the caller, tenant scoping,
and the app's long-lived parts (settings, broker link, dispatcher, tenant sync).

One connection per request: `DbConn` is the connection the audit middleware opened for
the request (control_api/request_audit.py), shared by the caller's lookup, the scoping
helpers, the route and the request's audit row. Reads run in the transaction the
connection begins by itself; a change commits explicitly once its audit row is written
(`RecordChange`); whatever a request leaves uncommitted is rolled back.

Scoping rule: a caller who may not see an object gets 404, the same answer as for an
object that does not exist, so ids of other tenants' objects do not leak. The audit
row still says `denied`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Connection, Engine

from contract.commands import CommandType
from control_api import auth, nodes, tenants
from control_api.audit import NoteAttempt, RecordChange
from control_api.auth import Principal
from control_api.broker_link import BrokerLink
from control_api.config import ApiSettings
from control_api.dispatcher import CommandDispatcher
from control_api.request_audit import RequestConnection, audit_change
from control_api.schemas import NodeIdPath
from control_api.site_push import SitePusher

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_conn(request: Request) -> Connection:
    """The request's connection, opened by AuditMiddleware's RequestConnection on first
    use and returned to the pool once the request's audit row is written."""
    db: RequestConnection = request.state.db
    return db.get()


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_link(request: Request) -> BrokerLink:
    link: BrokerLink = request.app.state.link
    return link


def get_dispatcher(request: Request) -> CommandDispatcher:
    dispatcher: CommandDispatcher = request.app.state.dispatcher
    return dispatcher


def get_sync_tenant(request: Request) -> tenants.SyncTenant:
    sync: tenants.SyncTenant = request.app.state.sync_tenant
    return sync


# For the readiness probe only, whose answer is whether a connection can be had at all;
# every route that reads or writes uses DbConn.
DbEngine = Annotated[Engine, Depends(get_engine)]
DbConn = Annotated[Connection, Depends(get_conn)]
Settings = Annotated[ApiSettings, Depends(get_settings)]
Link = Annotated[BrokerLink, Depends(get_link)]
Dispatcher = Annotated[CommandDispatcher, Depends(get_dispatcher)]
SyncTenant = Annotated[tenants.SyncTenant, Depends(get_sync_tenant)]


def note_target(request: Request, tenant_id: int | None = None, node_id: str | None = None) -> None:
    """What the request is about, for its audit row."""
    if tenant_id is not None:
        request.state.audit_tenant_id = tenant_id
    if node_id is not None:
        request.state.audit_node_id = node_id


def change_recorder(request: Request) -> RecordChange:
    def record(conn: Connection, params: dict[str, Any], *, tenant_id: int | None = None) -> None:
        note_target(request, tenant_id=tenant_id)
        audit_change(conn, request, params)

    return record


Audited = Annotated[RecordChange, Depends(change_recorder)]


def attempt_noter(request: Request) -> NoteAttempt:
    def note(params: dict[str, Any]) -> None:
        request.state.audit_attempt = params

    return note


Attempted = Annotated[NoteAttempt, Depends(attempt_noter)]


def current_user(
    request: Request,
    conn: DbConn,
    settings: Settings,
    token: Annotated[str | None, Depends(_bearer)],
) -> Principal:
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "not authenticated",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if not token:
        raise unauthorized
    principal = auth.bearer_principal(conn, token, settings.jwt_secret.get_secret_value())
    if principal is None:
        raise unauthorized
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def operator_user(request: Request, user: CurrentUser) -> Principal:
    """Admins and operators: the roles that may send commands."""
    if user.role == "viewer":
        request.state.denied = True
        raise HTTPException(status.HTTP_403_FORBIDDEN, "viewers cannot do this")
    return user


def admin_user(request: Request, user: CurrentUser) -> Principal:
    if not user.is_admin:
        request.state.denied = True
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")
    return user


OperatorUser = Annotated[Principal, Depends(operator_user)]
AdminUser = Annotated[Principal, Depends(admin_user)]


def node_in_scope(
    request: Request, node_id: NodeIdPath, user: CurrentUser, conn: DbConn
) -> nodes.Node:
    """The path's node if the caller may see it (404 otherwise), noted for the audit
    row. A route that needs a role first lists that role's dependency before this one."""
    note_target(request, node_id=node_id)
    node = nodes.visible(conn, user, node_id)
    note_target(request, tenant_id=node.tenant_id)
    return node


ScopedNode = Annotated[nodes.Node, Depends(node_in_scope)]


def site_pusher(user: CurrentUser, settings: Settings, dispatcher: Dispatcher) -> SitePusher:
    """Pushes a change of zone or tariffs to the nodes concerned, as the caller."""
    return SitePusher(
        timedelta(seconds=settings.command_ttl_s),
        lambda conn, command_id: dispatcher.publish_new(conn, command_id, CommandType.CONFIG_PUSH),
        user.id,
    )


SitePushes = Annotated[SitePusher, Depends(site_pusher)]


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None
