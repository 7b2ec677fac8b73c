"""The bounded hand-off between the MQTT network thread and the batch writer."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """One producer, one consumer, at most `capacity` items, taken in batches of up to
    `batch_size`.

    `put` is a bare deque append (no lock, no wake-up) except when the append completes
    a batch: then it wakes the consumer, once. The consumer
    sleeps until then (or its batch window ends) instead of polling. Both matter at
    tens of thousands of messages a second: queue.Queue's per-item locking and
    notifying cost more than validating the message, and a consumer that wakes while
    the producer is busy has to win the GIL back: every socket call of the network
    thread releases the GIL and wakes the waiting consumer again, only for it to find
    the GIL retaken. Polling 100 times a second that way cost the network thread about
    a tenth of its CPU (docs/benchmarks.md).
    """

    def __init__(self, capacity: int, batch_size: int, poll_s: float = 0.01) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        # A full backlog is a batch, whatever the batch size.
        self._batch_size = min(batch_size, capacity)
        self._poll_s = poll_s
        self._closed = False
        self._wake = threading.Event()
        self._space = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._capacity

    def put(self, item: T, keep_waiting: Callable[[], bool]) -> bool:
        """Appends the item; while full, blocks as long as `keep_waiting()` is true.
        Returns False (item not added) if it stopped waiting."""
        if len(self._items) >= self._capacity:
            with self._space:
                while len(self._items) >= self._capacity:
                    if not keep_waiting():
                        return False
                    self._space.wait(0.5)
        self._items.append(item)
        if len(self._items) == self._batch_size:
            self._wake.set()
        return True

    def close(self) -> None:
        """From now on `take` waits for nothing: it returns what is there, then None."""
        self._closed = True
        self._wake.set()

    def take(self, window_s: float, on_idle: Callable[[], None] = lambda: None) -> list[T] | None:
        """The next batch: waits for a first item, then up to `window_s` more for the
        batch to fill. While it waits for a first item, it calls `on_idle()` every poll
        interval: the producer has nothing to hand over."""
        while not self._items:
            if self._closed:
                return None
            on_idle()
            self._sleep(1, self._poll_s)
        deadline = time.monotonic() + window_s
        while len(self._items) < self._batch_size and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._sleep(self._batch_size, remaining)
        batch = [self._items.popleft() for _ in range(min(self._batch_size, len(self._items)))]
        with self._space:
            self._space.notify()
        return batch

    def _sleep(self, until_length: int, timeout: float) -> None:
        """Sleeps until woken or `timeout`, unless the backlog holds `until_length`
        items or is closed already. Clearing the event before checking means a wake-up
        between the check and the wait is not lost."""
        self._wake.clear()
        if len(self._items) < until_length and not self._closed:
            self._wake.wait(timeout)
