"""Users: admins manage every account; everyone reads their own at /auth/me. The rules
are in control_api/users.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from control_api import users
from control_api.deps import AdminUser, Audited, DbConn, note_target
from control_api.schemas import DbIdPath, UserIn, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[UserOut])
def list_users(_: AdminUser, conn: DbConn) -> Any:
    return users.list_all(conn)


@router.post("", response_model=UserOut, status_code=201, responses={409: {}})
def create_user(request: Request, body: UserIn, _: AdminUser, conn: DbConn, record: Audited) -> Any:
    note_target(request, tenant_id=body.tenant_id)
    return users.create(conn, body, record)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: DbIdPath, _: AdminUser, conn: DbConn) -> Any:
    return users.get(conn, user_id)


@router.patch("/{user_id}", response_model=UserOut)
def update_user(
    user_id: DbIdPath, body: UserPatch, admin: AdminUser, conn: DbConn, record: Audited
) -> Any:
    return users.update(conn, admin, user_id, body, record)


@router.delete("/{user_id}", status_code=204)
def delete_user(user_id: DbIdPath, admin: AdminUser, conn: DbConn, record: Audited) -> None:
    """Deletes the account; its audit rows keep its id and email."""
    users.delete(conn, admin, user_id, record)
