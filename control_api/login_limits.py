"""Failed-login rate limits, per account and per client address (moving windows)."""

from __future__ import annotations

import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class LoginLimits:
    """In-process counters: with several API replicas each keeps its own, so the
    effective limit is the configured one times the replica count."""

    def __init__(self, per_account: str, per_address: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._account = parse(per_account)
        self._address = parse(per_address)

    def _keys(self, email: str, address: str) -> list[tuple[RateLimitItem, str]]:
        # The email as normalized where it entered (control_api/identity.py): the same
        # key as the account it names, however it was spelled.
        return [(self._account, "account:" + email), (self._address, "addr:" + address)]

    def retry_after_s(self, email: str, address: str) -> int:
        """0 when a login may be tried now, else seconds until one may."""
        resets = [
            self._limiter.get_window_stats(limit, key).reset_time
            for limit, key in self._keys(email, address)
            if not self._limiter.test(limit, key)
        ]
        if not resets:
            return 0
        return max(1, int(max(resets) - time.time()) + 1)

    def failed(self, email: str, address: str) -> None:
        for limit, key in self._keys(email, address):
            self._limiter.hit(limit, key)
