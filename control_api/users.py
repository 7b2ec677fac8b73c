"""User accounts: admins manage every account (an admin belongs to no tenant, every
other role to exactly one); passwords are stored as Argon2id hashes only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from control_api import tenants
from control_api.audit import RecordChange
from control_api.auth import Principal
from control_api.errors import ConflictError, InvalidError, NotFoundError
from control_api.passwords import hash_password
from control_api.schemas import UserIn, UserPatch

_SELECT = "SELECT id, email, role, tenant_id, totp_enabled, disabled, created_at FROM users"


def _find(conn: Connection, user_id: int) -> dict[str, Any] | None:
    row = conn.execute(text(_SELECT + " WHERE id = :id"), {"id": user_id}).mappings().first()
    return dict(row) if row else None


def get(conn: Connection, user_id: int) -> dict[str, Any]:
    user = _find(conn, user_id)
    if user is None:
        raise NotFoundError("user not found")
    return user


def list_all(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(text(_SELECT + " ORDER BY id")).mappings()]


def _check_role_tenant(conn: Connection, role: str, tenant_id: int | None) -> None:
    if role == "admin" and tenant_id is not None:
        raise InvalidError("admins belong to no tenant")
    if role != "admin":
        if tenant_id is None:
            raise InvalidError(f"a {role} needs a tenant_id")
        tenants.require(conn, tenant_id)


def create(conn: Connection, body: UserIn, record: RecordChange) -> dict[str, Any]:
    """ConflictError when the email has an account."""
    try:
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
        record(conn, body.model_dump(exclude={"password"}))
        user = get(conn, user_id)
        conn.commit()
    except IntegrityError as exc:
        conn.rollback()
        raise ConflictError(f"{body.email} has an account") from exc
    return user


def update(
    conn: Connection, admin: Principal, user_id: int, body: UserPatch, record: RecordChange
) -> dict[str, Any]:
    """Changes what the patch sets; an admin cannot disable or demote themselves. A new
    password, disabling and enabling end every token issued before."""
    # An explicit null leaves a field as it is; only tenant_id can be set to none.
    changes = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k == "tenant_id"
    }
    if user_id == admin.id and (changes.get("disabled") or changes.get("role", "admin") != "admin"):
        raise ConflictError("you cannot disable or demote yourself")
    user = get(conn, user_id)
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
            " disabled = coalesce(:disabled, disabled),"
            " token_version = token_version + CAST(:revoke AS int) WHERE id = :id"
        ),
        {
            "role": role,
            "tenant": tenant_id,
            "hash": hash_password(password) if password else None,
            "disabled": changes.get("disabled"),
            "revoke": "password" in changes or "disabled" in changes,
            "id": user_id,
        },
    )
    record(conn, {k: v for k, v in changes.items() if k != "password"}, tenant_id=tenant_id)
    updated = get(conn, user_id)
    conn.commit()
    return updated


def delete(conn: Connection, admin: Principal, user_id: int, record: RecordChange) -> None:
    """Deletes the account (not one's own); its audit rows keep its id and email."""
    if user_id == admin.id:
        raise ConflictError("you cannot delete your own account")
    user = get(conn, user_id)
    conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    record(conn, {"email": user["email"]}, tenant_id=user["tenant_id"])
    conn.commit()
