"""What the agent sent and the hub has not confirmed yet, and how fast it may replay.

`Unconfirmed` holds every sample sent and not yet confirmed, with when it was sent, in
memory: the window of a replay is bounded (`replay_batch_samples` x
`replay_batches_in_flight`), and live samples wait at most a timeout, so it stays small.
What it forgets (a restart) is still in the buffer and is simply sent again: the hub
stores a sample once, whatever copies arrive.

When the oldest sample has stayed unconfirmed for `confirm_timeout_s`, what was sent is
taken to be lost on the way (a broker restart drops what it queued for a stopped
collector) and everything unconfirmed is sent again, in seq order. When timeouts follow
each other without any confirmation in between, the hub is away rather than a message
lost: the timeout doubles each time, up to MAX_BACKOFF times, so a fleet does not resend
its windows every minute into a broker whose collectors are down. Any confirmation
brings it back to `confirm_timeout_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

MAX_BACKOFF = 16


class Unconfirmed:
    """Agent thread only. `clock` is monotonic seconds."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        # seq -> (sent at, sent in a replay batch); in the order sent, oldest first.
        self._sent: dict[int, tuple[float, bool]] = {}
        self.replayed = 0  # how many of them went out in replay batches
        self.backoff = 1

    def __len__(self) -> int:
        return len(self._sent)

    def __contains__(self, seq: object) -> bool:
        return seq in self._sent

    def sent(self, seqs: Iterable[int], replay: bool) -> None:
        now = self.clock()
        for seq in seqs:
            self._forget(seq)
            self._sent[seq] = (now, replay)
            self.replayed += replay

    def confirmed(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Forgets the samples in these inclusive ranges (any the hub names, whether sent
        by this run or not) and resets the back-off: the hub is there."""
        self.backoff = 1
        for first, last in ranges:
            if last - first < len(self._sent):
                for seq in range(first, last + 1):
                    self._forget(seq)
            else:
                for seq in [s for s in self._sent if first <= s <= last]:
                    self._forget(seq)

    def expired(self) -> list[int]:
        """When the oldest sample has waited the current timeout: forgets and returns
        every unconfirmed sample (to be sent again), and the next timeout is twice as
        long, up to MAX_BACKOFF times `timeout_s`. Otherwise nothing."""
        oldest = next(iter(self._sent.values()), None)
        if oldest is None or self.clock() - oldest[0] < self.timeout_s * self.backoff:
            return []
        out = list(self._sent)
        self.clear()
        self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        return out

    def clear(self) -> None:
        """Forgets everything (a new connection: whatever was unconfirmed goes again)."""
        self._sent.clear()
        self.replayed = 0

    def _forget(self, seq: int) -> None:
        entry = self._sent.pop(seq, None)
        if entry is not None:
            self.replayed -= entry[1]


class ReplayPace:
    """At most `samples_per_s` replayed samples a second, on average from the first
    batch on: a batch may go once the previous ones' share of time has passed."""

    def __init__(self, samples_per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.samples_per_s = samples_per_s
        self.clock = clock
        self._next_at = float("-inf")

    def ready(self) -> bool:
        return self.clock() >= self._next_at

    def spent(self, samples: int) -> None:
        self._next_at = max(self._next_at, self.clock()) + samples / self.samples_per_s
