"""JWT bearer tokens (HS256) naming a user and the account's token version; the user is
re-read on every request, so a disabled account or a changed role takes effect at once,
and a token whose version is no longer the account's (its password changed, or it was
disabled) is refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"


class InvalidTokenError(Exception):
    """Expired, tampered with, or not one of ours."""


@dataclass(frozen=True)
class TokenSubject:
    user_id: int
    # `users.token_version` when the token was issued.
    token_version: int


def issue(subject: TokenSubject, secret: str, ttl: timedelta, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    claims = {
        "sub": str(subject.user_id),
        "ver": subject.token_version,
        "iat": now,
        "exp": now + ttl,
        "iss": "wattfleet",
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def subject_of(token: str, secret: str) -> TokenSubject:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer="wattfleet",
            options={"require": ["exp", "sub", "ver"]},
        )
        return TokenSubject(int(claims["sub"]), int(claims["ver"]))
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise InvalidTokenError(str(exc)) from exc
