"""The bounded hand-off between the MQTT network thread and the batch writer."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backlog(Generic[T]):
    """One producer, one consumer, at most `capacity` items.

    `put` is a bare deque append (no lock, no wake-up) unless the backlog is full; the
    consumer polls in short sleeps instead of being woken per item. At tens of
    thousands of messages a second, queue.Queue's per-item locking and notifying cost
    more than validating the message.
    """

    def __init__(self, capacity: int, poll_s: float = 0.01) -> None:
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._poll_s = poll_s
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
        return True

    def take(
        self,
        limit: int,
        window_s: float,
        stopping: threading.Event,
        on_idle: Callable[[], None] = lambda: None,
    ) -> list[T] | None:
        """The next batch: waits for a first item, then up to `window_s` more for the
        batch to reach `limit`. Once `stopping` is set it waits for nothing: it returns
        what is there, and None when empty. While it waits for a first item, it calls
        `on_idle()` every poll interval: the producer has nothing to hand over."""
        while not self._items:
            on_idle()
            if stopping.wait(self._poll_s):
                if not self._items:
                    return None
                break
        deadline = time.monotonic() + window_s
        while len(self._items) < limit and not stopping.is_set() and time.monotonic() < deadline:
            time.sleep(self._poll_s)
        batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
        with self._space:
            self._space.notify()
        return batch
