"""User passwords (Argon2id) and TOTP second factors."""

from __future__ import annotations

import hmac
import time

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this when the account does not exist keeps the answer time the
# same, so response times do not tell which emails have accounts.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

TOTP_ISSUER = "wattfleet"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, now_s: float | None = None) -> int | None:
    """The time step (a 30-second counter) whose code this is, or None when it is none of
    the current step and the one either side (a phone clock 30 s off still logs in).
    A code is single-use: callers accept a step only above the last one they accepted."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(time.time() if now_s is None else now_s)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
