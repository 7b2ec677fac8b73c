"""JWT bearer tokens (HS256) naming a user; the user is re-read on every request, so a
disabled account or a changed role takes effect at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"


class InvalidTokenError(Exception):
    """Expired, tampered with, or not one of ours."""


def issue(user_id: int, secret: str, ttl: timedelta, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    claims = {"sub": str(user_id), "iat": now, "exp": now + ttl, "iss": "wattfleet"}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def user_id_from(token: str, secret: str) -> int:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer="wattfleet", options={"require": ["exp"]}
        )
        return int(claims["sub"])
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise InvalidTokenError(str(exc)) from exc
