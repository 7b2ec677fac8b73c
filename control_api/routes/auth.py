"""Login (JSON or the OAuth2 password form), the caller's profile, and TOTP setup. The
rules are in control_api/auth.py."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from control_api import auth, tokens, users
from control_api.deps import Audited, CurrentUser, DbConn, Settings, client_addr
from control_api.schemas import (
    LoginIn,
    TokenOut,
    TotpConfirmIn,
    TotpSetupIn,
    TotpSetupOut,
    UserOut,
)

router = APIRouter(prefix="/auth", tags=["auth"])

# LoginIn inline: a model only a dependency reads is not in the schema's components, and
# a reference to it there breaks ReDoc (and Swagger UI's view of this operation).
_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginIn.model_json_schema()},
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
    /docs Authorize button sends (`username` is the email). Anything else, malformed
    JSON included, is refused like any other invalid body (422)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = await request.form()
            return LoginIn(
                email=str(form.get("username", "")), password=str(form.get("password", ""))
            )
        # Parsed as FastAPI parses every other body, so the same input gets the same
        # answer here as anywhere else.
        data = json.loads(await request.body())
        return LoginIn.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested too deep
        invalid = {"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {exc}"}
        raise RequestValidationError([invalid]) from exc
    except ClientDisconnect as exc:
        # Gone before its body arrived whole: the client's doing (400, as FastAPI answers
        # it on every other route), not a server error.
        raise HTTPException(400, "There was an error parsing the body") from exc


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
def login(request: Request, body: LoginBody, conn: DbConn, settings: Settings) -> TokenOut:
    request.state.audit_email = body.email
    user = auth.log_in(
        conn,
        request.app.state.login_limits,
        body,
        client_addr(request) or "unknown",
        settings.require_admin_totp,
    )
    request.state.principal = user
    token = tokens.issue(
        tokens.TokenSubject(user.id, user.token_version),
        settings.jwt_secret.get_secret_value(),
        timedelta(seconds=settings.jwt_ttl_s),
    )
    return TokenOut(access_token=token)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser, conn: DbConn) -> Any:
    return users.get(conn, user.id)


@router.post(
    "/totp",
    response_model=TotpSetupOut,
    responses={429: {"description": "too many failed attempts"}},
)
def totp_setup(
    request: Request, body: TotpSetupIn, user: CurrentUser, conn: DbConn, record: Audited
) -> TotpSetupOut:
    """Starts (or restarts) TOTP setup with the account's password, and while TOTP is on
    a current code: TOTP is off from here until `/auth/totp/confirm`."""
    secret, uri = auth.start_totp(
        conn, request.app.state.login_limits, user, body, client_addr(request) or "unknown", record
    )
    return TotpSetupOut(secret=secret, otpauth_uri=uri)


@router.post("/totp/confirm", status_code=204, responses={400: {"description": "wrong code"}})
def totp_confirm(body: TotpConfirmIn, user: CurrentUser, conn: DbConn, record: Audited) -> None:
    auth.confirm_totp(conn, user, body.code, record)
