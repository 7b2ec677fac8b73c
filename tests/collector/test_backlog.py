from __future__ import annotations

import threading

from collector.backlog import Backlog
from tests.support.services import wait_for


def test_take_waits_for_the_window_then_returns_up_to_the_limit():
    backlog: Backlog[int] = Backlog(capacity=10, poll_s=0.001)
    stopping = threading.Event()
    for i in range(7):
        assert backlog.put(i, lambda: True)
    assert backlog.take(limit=5, window_s=0.01, stopping=stopping) == [0, 1, 2, 3, 4]
    assert backlog.take(limit=5, window_s=0.01, stopping=stopping) == [5, 6]


def test_put_blocks_while_full_until_space_or_giving_up():
    backlog: Backlog[int] = Backlog(capacity=2, poll_s=0.001)
    stopping = threading.Event()
    backlog.put(1, lambda: True)
    backlog.put(2, lambda: True)
    assert backlog.full()
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(backlog.put(3, lambda: True)))
    producer.start()
    producer.join(0.2)
    assert not done, "put returned while the backlog was full"
    assert backlog.take(limit=1, window_s=0, stopping=stopping) == [1]
    wait_for(lambda: done == [True], 5, "blocked put to finish")
    assert backlog.put(4, lambda: False) is False  # full again, and told to stop waiting
    assert len(backlog) == 2


def test_stopping_drains_without_waiting_then_ends():
    backlog: Backlog[int] = Backlog(capacity=10, poll_s=0.001)
    stopping = threading.Event()
    backlog.put(1, lambda: True)
    stopping.set()
    assert backlog.take(limit=5, window_s=60, stopping=stopping) == [1]
    assert backlog.take(limit=5, window_s=60, stopping=stopping) is None


def test_waiting_for_a_first_item_calls_on_idle_until_one_arrives():
    backlog: Backlog[int] = Backlog(capacity=10, poll_s=0.001)
    stopping = threading.Event()
    idle_calls: list[int] = []

    def on_idle() -> None:
        idle_calls.append(len(backlog))
        if len(idle_calls) == 3:
            backlog.put(7, lambda: True)

    assert backlog.take(limit=1, window_s=0, stopping=stopping, on_idle=on_idle) == [7]
    assert idle_calls == [0, 0, 0]
    backlog.put(8, lambda: True)
    assert backlog.take(limit=1, window_s=0, stopping=stopping, on_idle=on_idle) == [8]
    assert len(idle_calls) == 3, "on_idle was called although an item was waiting"
