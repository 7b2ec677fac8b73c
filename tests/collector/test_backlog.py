from __future__ import annotations

import threading
import time

from collector.backlog import Backlog
from tests.support.services import wait_for


def test_take_waits_for_the_window_then_returns_up_to_a_batch():
    backlog: Backlog[int] = Backlog(capacity=10, batch_size=5, poll_s=0.001)
    for i in range(7):
        assert backlog.put(i, lambda: True)
    assert backlog.take(window_s=0.01) == [0, 1, 2, 3, 4]
    assert backlog.take(window_s=0.01) == [5, 6]


def _waiting_taker(backlog: Backlog[int]) -> tuple[threading.Thread, list[list[int] | None]]:
    """A thread in `take` with a 60 s window, given time to start waiting; what it
    takes is appended to the list."""
    taken: list[list[int] | None] = []
    taker = threading.Thread(target=lambda: taken.append(backlog.take(window_s=60)))
    taker.start()
    time.sleep(0.05)
    return taker, taken


def test_the_item_that_completes_a_batch_wakes_the_waiting_taker():
    backlog: Backlog[int] = Backlog(capacity=10, batch_size=3, poll_s=0.001)
    backlog.put(0, lambda: True)
    taker, taken = _waiting_taker(backlog)
    backlog.put(1, lambda: True)
    taker.join(0.2)
    assert not taken, "take returned before the batch was complete or its window ended"
    backlog.put(2, lambda: True)
    taker.join(5)
    assert taken == [[0, 1, 2]], "take slept through its batch completing"


def test_a_full_backlog_is_a_batch_whatever_the_batch_size():
    backlog: Backlog[int] = Backlog(capacity=2, batch_size=100, poll_s=0.001)
    backlog.put(1, lambda: True)
    backlog.put(2, lambda: True)
    started = time.monotonic()
    assert backlog.take(window_s=60) == [1, 2]
    assert time.monotonic() - started < 30, "take waited out its window on a full backlog"


def test_put_blocks_while_full_until_space_or_giving_up():
    backlog: Backlog[int] = Backlog(capacity=2, batch_size=1, poll_s=0.001)
    backlog.put(1, lambda: True)
    backlog.put(2, lambda: True)
    assert backlog.full()
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(backlog.put(3, lambda: True)))
    producer.start()
    producer.join(0.2)
    assert not done, "put returned while the backlog was full"
    assert backlog.take(window_s=0) == [1]
    wait_for(lambda: done == [True], 5, "blocked put to finish")
    assert backlog.put(4, lambda: False) is False  # full again, and told to stop waiting
    assert len(backlog) == 2


def test_closing_wakes_a_waiting_taker_which_drains_then_ends():
    backlog: Backlog[int] = Backlog(capacity=10, batch_size=5, poll_s=0.001)
    backlog.put(1, lambda: True)
    taker, taken = _waiting_taker(backlog)
    backlog.close()
    taker.join(5)
    assert taken == [[1]]
    assert backlog.take(window_s=60) is None


def test_waiting_for_a_first_item_calls_on_idle_until_one_arrives():
    backlog: Backlog[int] = Backlog(capacity=10, batch_size=1, poll_s=0.001)
    idle_calls: list[int] = []

    def on_idle() -> None:
        idle_calls.append(len(backlog))
        if len(idle_calls) == 3:
            backlog.put(7, lambda: True)

    assert backlog.take(window_s=0, on_idle=on_idle) == [7]
    assert idle_calls == [0, 0, 0]
    backlog.put(8, lambda: True)
    assert backlog.take(window_s=0, on_idle=on_idle) == [8]
    assert len(idle_calls) == 3, "on_idle was called although an item was waiting"
