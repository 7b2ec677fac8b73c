"""Users: admins manage every account; everyone reads their own at /auth/me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from control_api.deps import AdminUser, DbEngine, note_target
from control_api.passwords import hash_password
from control_api.request_audit import audit_change
from control_api.routes.tenants import require_tenant
from control_api.schemas import DbIdPath, UserIn, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])

_SELECT = "SELECT id, email, role, tenant_id, totp_enabled, disabled, created_at FROM users"


def _get(conn: Connection, user_id: int) -> dict[str, Any] | None:
    row = conn.execute(text(_SELECT + " WHERE id = :id"), {"id": user_id}).mappings().first()
    return dict(row) if row else None


def _check_role_tenant(conn: Connection, role: str, tenant_id: int | None) -> None:
    if role == "admin" and tenant_id is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "admins belong to no tenant")
    if role != "admin":
        if tenant_id is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"a {role} needs a tenant_id"
            )
        require_tenant(conn, tenant_id)


@router.get("", response_model=list[UserOut])
def list_users(_: AdminUser, engine: DbEngine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(_SELECT + " ORDER BY id")).mappings().all()


@router.post("", response_model=UserOut, status_code=201, responses={409: {}})
def create_user(request: Request, body: UserIn, _: AdminUser, engine: DbEngine) -> Any:
    note_target(request, tenant_id=body.tenant_id)
    try:
        with engine.begin() as conn:
            _check_role_tenant(conn, body.role, body.tenant_id)
            user_id = conn.execute(
                text(
                    "INSERT INTO users (email, password_hash, role, tenant_id)"
                    " VALUES (:email, :hash, :role, :tenant) RETURNING id"
                ),
                {
                    "email": body.email,
                    "hash": hash_password(body.password),
                    "role": body.role,
                    "tenant": body.tenant_id,
                },
            ).scalar_one()
            audit_change(conn, request, 201, body.model_dump(exclude={"password"}))
            return _get(conn, user_id)
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{body.email} has an account") from exc


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: DbIdPath, _: AdminUser, engine: DbEngine) -> Any:
    with engine.connect() as conn:
        user = _get(conn, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
    return user


@router.patch("/{user_id}", response_model=UserOut)
def update_user(
    request: Request, user_id: DbIdPath, body: UserPatch, admin: AdminUser, engine: DbEngine
) -> Any:
    changes = body.model_dump(exclude_unset=True)
    if user_id == admin.id and (changes.get("disabled") or changes.get("role", "admin") != "admin"):
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot disable or demote yourself")
    with engine.begin() as conn:
        user = _get(conn, user_id)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
        role = changes.get("role", user["role"])
        tenant_id = changes["tenant_id"] if "tenant_id" in changes else user["tenant_id"]
        if role == "admin" and "tenant_id" not in changes:
            tenant_id = None
        _check_role_tenant(conn, role, tenant_id)
        password = changes.get("password")
        conn.execute(
            text(
                "UPDATE users SET role = :role, tenant_id = :tenant,"
                " password_hash = coalesce(:hash, password_hash),"
                " disabled = coalesce(:disabled, disabled) WHERE id = :id"
            ),
            {
                "role": role,
                "tenant": tenant_id,
                "hash": hash_password(password) if password else None,
                "disabled": changes.get("disabled"),
                "id": user_id,
            },
        )
        note_target(request, tenant_id=tenant_id)
        audit_change(conn, request, 200, {k: v for k, v in changes.items() if k != "password"})
        return _get(conn, user_id)


@router.delete("/{user_id}", status_code=204)
def delete_user(request: Request, user_id: DbIdPath, admin: AdminUser, engine: DbEngine) -> None:
    """Deletes the account; its audit rows keep its id and email."""
    if user_id == admin.id:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot delete your own account")
    with engine.begin() as conn:
        user = _get(conn, user_id)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "user not found")
        conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
        note_target(request, tenant_id=user["tenant_id"])
        audit_change(conn, request, 204, {"email": user["email"]})
