"""User passwords (Argon2id) and TOTP second factors."""

from __future__ import annotations

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


def verify_totp(secret: str, code: str) -> bool:
    # One step either side tolerates a phone clock 30 s off.
    return pyotp.TOTP(secret).verify(code, valid_window=1)
