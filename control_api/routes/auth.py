"""Login (JSON or the OAuth2 password form), the caller's profile, and TOTP setup."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import ValidationError
from sqlalchemy import text

from control_api import passwords, tokens
from control_api.deps import CurrentUser, DbEngine, Principal, Settings, client_addr
from control_api.request_audit import audit_change
from control_api.schemas import LoginIn, TokenOut, TotpConfirmIn, TotpSetupOut, UserOut

router = APIRouter(prefix="/auth", tags=["auth"])

_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LoginIn"}},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "minLength": 1, "description": "email"},
                        "password": {"type": "string", "minLength": 1},
                    },
                }
            },
        },
    }
}


async def _login_body(request: Request) -> LoginIn:
    """JSON `{"email", "password", "totp_code"?}`, or the OAuth2 password form that the
    /docs Authorize button sends (`username` is the email)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = await request.form()
            return LoginIn(
                email=str(form.get("username", "")), password=str(form.get("password", ""))
            )
        return LoginIn.model_validate_json(await request.body())
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail: Any = (
            exc.errors(include_url=False) if isinstance(exc, ValidationError) else str(exc)
        )
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from exc


LoginBody = Annotated[LoginIn, Depends(_login_body)]


@router.post(
    "/login",
    response_model=TokenOut,
    openapi_extra=_LOGIN_BODY,
    responses={
        401: {"description": "wrong credentials"},
        429: {"description": "too many failed attempts"},
    },
)
def login(request: Request, body: LoginBody, engine: DbEngine, settings: Settings) -> TokenOut:
    limits = request.app.state.login_limits
    address = client_addr(request) or "unknown"
    request.state.audit_email = body.email
    wait_s = limits.retry_after_s(body.email, address)
    if wait_s:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
            headers={"Retry-After": str(wait_s)},
        )
    with engine.connect() as conn:
        user = (
            conn.execute(
                text(
                    "SELECT id, email, role, tenant_id, password_hash, totp_secret, totp_enabled"
                    " FROM users WHERE lower(email) = lower(:email) AND NOT disabled"
                ),
                {"email": body.email},
            )
            .mappings()
            .first()
        )
    if not passwords.verify_password(user["password_hash"] if user else None, body.password):
        limits.failed(body.email, address)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong email or password")
    assert user is not None
    if user["totp_enabled"]:
        if body.totp_code is None or not passwords.verify_totp(user["totp_secret"], body.totp_code):
            limits.failed(body.email, address)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid TOTP code is required")
    elif user["role"] == "admin" and settings.require_admin_totp:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin accounts need TOTP here: set it up with"
            " `python -m control_api create-admin --totp`",
        )
    request.state.principal = Principal(user["id"], user["email"], user["role"], user["tenant_id"])
    token = tokens.issue(
        user["id"], settings.jwt_secret.get_secret_value(), timedelta(seconds=settings.jwt_ttl_s)
    )
    return TokenOut(access_token=token)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser, engine: DbEngine) -> Any:
    with engine.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT id, email, role, tenant_id, totp_enabled, disabled, created_at"
                    " FROM users WHERE id = :id"
                ),
                {"id": user.id},
            )
            .mappings()
            .one()
        )


@router.post("/totp", response_model=TotpSetupOut)
def totp_setup(request: Request, user: CurrentUser, engine: DbEngine) -> TotpSetupOut:
    """Starts (or restarts) TOTP setup; it takes effect after `/auth/totp/confirm`."""
    secret = passwords.new_totp_secret()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET totp_secret = :s, totp_enabled = false WHERE id = :id"),
            {"s": secret, "id": user.id},
        )
        audit_change(conn, request, 200, {})
    return TotpSetupOut(secret=secret, otpauth_uri=passwords.totp_uri(secret, user.email))


@router.post("/totp/confirm", status_code=204, responses={400: {"description": "wrong code"}})
def totp_confirm(
    request: Request, body: TotpConfirmIn, user: CurrentUser, engine: DbEngine
) -> None:
    with engine.connect() as conn:
        secret = conn.execute(
            text("SELECT totp_secret FROM users WHERE id = :id"), {"id": user.id}
        ).scalar()
    if not secret or not passwords.verify_totp(secret, body.code):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "wrong TOTP code, or no setup started")
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET totp_enabled = true WHERE id = :id"), {"id": user.id})
        audit_change(conn, request, 204, {})
