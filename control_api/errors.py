"""What the API's rules refuse, as exceptions the rule modules raise without knowing
HTTP. One exception handler (control_api/app.py) answers each with its status code and
the message as `detail`.
"""

from __future__ import annotations


class RefusedError(Exception):
    """The request cannot be carried out as asked (400 unless a subclass says otherwise);
    the message says why."""


class WrongCredentialsError(RefusedError):
    """A login with a wrong password or TOTP code, or without a required TOTP (401)."""


class NotFoundError(RefusedError):
    """No such object (404)."""


class NotVisibleError(NotFoundError):
    """The object belongs to a tenant the caller may not see: answered like a missing
    one, so other tenants' ids do not leak, but audited as denied."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class ConflictError(RefusedError):
    """Conflicts with the current state (409)."""


class InvalidError(RefusedError):
    """Well-formed input the rules do not accept (422)."""


class RateLimitedError(RefusedError):
    """Too many failed attempts; another may be tried after `retry_after_s` (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(RefusedError):
    """A peer the change needs (the broker) did not take it; nothing was changed (503)."""
