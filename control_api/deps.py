"""Request dependencies: the database, the caller, and tenant scoping.

Scoping rule: a caller who may not see an object gets 404, the same answer as for an
object that does not exist, so ids of other tenants' objects do not leak. The audit
row still says `denied`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine, text

from control_api.config import ApiSettings
from control_api.tokens import InvalidTokenError, user_id_from

_bearer = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


@dataclass(frozen=True)
class Principal:
    id: int
    email: str
    role: str
    tenant_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees_tenant(self, tenant_id: int) -> bool:
        return self.is_admin or self.tenant_id == tenant_id


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


DbEngine = Annotated[Engine, Depends(get_engine)]
Settings = Annotated[ApiSettings, Depends(get_settings)]


def note_target(request: Request, tenant_id: int | None = None, node_id: str | None = None) -> None:
    """What the request is about, for its audit row."""
    if tenant_id is not None:
        request.state.audit_tenant_id = tenant_id
    if node_id is not None:
        request.state.audit_node_id = node_id


def hidden(request: Request, what: str) -> HTTPException:
    """The 404 for an object the caller may not see; audited as denied."""
    request.state.denied = True
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def current_user(
    request: Request,
    engine: DbEngine,
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
    try:
        user_id = user_id_from(token, settings.jwt_secret.get_secret_value())
    except InvalidTokenError as exc:
        raise unauthorized from exc
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT id, email, role, tenant_id FROM users WHERE id = :id AND NOT disabled"),
            {"id": user_id},
        ).first()
    if row is None:
        raise unauthorized
    principal = Principal(*row)
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


def load_node(request: Request, engine: Engine, user: Principal, node_id: str) -> dict[str, Any]:
    """The node row if the caller may see it; 404 otherwise."""
    note_target(request, node_id=node_id)
    with engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT id, tenant_id, display_name, enabled FROM nodes WHERE id = :id"),
                {"id": node_id},
            )
            .mappings()
            .first()
        )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "node not found")
    if not user.sees_tenant(row["tenant_id"]):
        raise hidden(request, "node")
    note_target(request, tenant_id=row["tenant_id"])
    return dict(row)


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None
