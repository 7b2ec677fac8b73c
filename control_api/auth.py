"""Who the caller is: the principal behind a token, the password and TOTP checks of a
login (with its failure limits), and the caller's own TOTP setup."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from control_api import passwords
from control_api.audit import RecordChange
from control_api.errors import RateLimitedError, RefusedError, WrongCredentialsError
from control_api.login_limits import LoginLimits
from control_api.schemas import LoginIn, TotpSetupIn
from control_api.tokens import InvalidTokenError, TokenSubject, subject_of


@dataclass(frozen=True)
class Principal:
    id: int
    email: str
    role: str
    tenant_id: int | None
    # What the account's tokens must carry (users.token_version).
    token_version: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees_tenant(self, tenant_id: int) -> bool:
        return self.is_admin or self.tenant_id == tenant_id


def bearer_principal(conn: Connection, token: str, secret: str) -> Principal | None:
    """The user a bearer token names, unless the token is invalid (expired, forged) or
    names no current account (see `principal`)."""
    try:
        subject = subject_of(token, secret)
    except InvalidTokenError:
        return None
    return principal(conn, subject)


def principal(conn: Connection, subject: TokenSubject) -> Principal | None:
    """The token's user, unless the account is gone or disabled, or the token was
    issued before its password last changed or it was last disabled."""
    row = conn.execute(
        text(
            "SELECT id, email, role, tenant_id, token_version FROM users"
            " WHERE id = :id AND token_version = :version AND NOT disabled"
        ),
        {"id": subject.user_id, "version": subject.token_version},
    ).first()
    return Principal(*row) if row else None


def log_in(
    conn: Connection, limits: LoginLimits, body: LoginIn, address: str, require_admin_totp: bool
) -> Principal:
    """The account whose credentials these are. Raises RateLimitedError while the
    account or the address has failed too often, WrongCredentialsError otherwise (a
    wrong password or TOTP code counts as a failure; an admin without TOTP where it is
    required does not)."""
    wait_s = limits.retry_after_s(body.email, address)
    if wait_s:
        raise RateLimitedError("too many failed logins; try again later", retry_after_s=wait_s)
    user = (
        conn.execute(
            text(
                "SELECT id, email, role, tenant_id, token_version, password_hash, totp_secret,"
                " totp_enabled FROM users WHERE email = :email AND NOT disabled"
            ),
            {"email": body.email},
        )
        .mappings()
        .first()
    )
    if not passwords.verify_password(user["password_hash"] if user else None, body.password):
        limits.failed(body.email, address)
        raise WrongCredentialsError("wrong email or password")
    assert user is not None
    if user["totp_enabled"]:
        if body.totp_code is None or not _use_totp_code(
            conn, user["id"], user["totp_secret"], body.totp_code
        ):
            limits.failed(body.email, address)
            raise WrongCredentialsError("a valid TOTP code is required (each code works once)")
        conn.commit()
    elif user["role"] == "admin" and require_admin_totp:
        raise WrongCredentialsError(
            "admin accounts need TOTP here: set it up with"
            " `python -m control_api create-admin --totp`"
        )
    return Principal(
        user["id"], user["email"], user["role"], user["tenant_id"], user["token_version"]
    )


def _use_totp_code(conn: Connection, user_id: int, secret: str, code: str) -> bool:
    """Whether the code is current and of a later time step than any this account used
    before; if so, its step is now used (in the caller's transaction, for it to commit).
    Concurrent uses of one code: the row lock lets only the first pass."""
    step = passwords.totp_step(secret, code)
    if step is None:
        return False
    used = conn.execute(
        text(
            "UPDATE users SET totp_last_step = :step WHERE id = :id"
            " AND (totp_last_step IS NULL OR totp_last_step < :step) RETURNING id"
        ),
        {"step": step, "id": user_id},
    ).first()
    return used is not None


def start_totp(
    conn: Connection,
    limits: LoginLimits,
    user: Principal,
    body: TotpSetupIn,
    address: str,
    record: RecordChange,
) -> tuple[str, str]:
    """A new TOTP secret for the caller and its otpauth:// URI; it takes effect once
    confirmed, and until then the account has no TOTP. A token alone cannot do this:
    it needs the password, and while TOTP is on a current code too. Wrong ones count as
    failed logins (WrongCredentialsError; RateLimitedError while limited)."""
    wait_s = limits.retry_after_s(user.email, address)
    if wait_s:
        raise RateLimitedError("too many failed attempts; try again later", retry_after_s=wait_s)
    row = (
        conn.execute(
            text("SELECT password_hash, totp_secret, totp_enabled FROM users WHERE id = :id"),
            {"id": user.id},
        )
        .mappings()
        .one()
    )
    if not passwords.verify_password(row["password_hash"], body.password) or (
        row["totp_enabled"]
        and (body.code is None or not _use_totp_code(conn, user.id, row["totp_secret"], body.code))
    ):
        conn.rollback()
        limits.failed(user.email, address)
        raise WrongCredentialsError("wrong password, or TOTP is on and the code is not current")
    secret = passwords.new_totp_secret()
    conn.execute(
        text("UPDATE users SET totp_secret = :s, totp_enabled = false WHERE id = :id"),
        {"s": secret, "id": user.id},
    )
    record(conn, {})
    conn.commit()
    return secret, passwords.totp_uri(secret, user.email)


def confirm_totp(conn: Connection, user: Principal, code: str, record: RecordChange) -> None:
    """Turns TOTP on (the code's step counts as used); RefusedError when the code is
    wrong or no setup was started."""
    secret = conn.execute(
        text("SELECT totp_secret FROM users WHERE id = :id"), {"id": user.id}
    ).scalar()
    if not secret or not _use_totp_code(conn, user.id, secret, code):
        raise RefusedError("wrong TOTP code, or no setup started")
    conn.execute(text("UPDATE users SET totp_enabled = true WHERE id = :id"), {"id": user.id})
    record(conn, {})
    conn.commit()
