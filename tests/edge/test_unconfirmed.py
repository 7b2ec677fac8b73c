"""The in-memory window of sent, unconfirmed samples, and the replay pace (clocks
injected: nothing waits)."""

from __future__ import annotations

from edge.unconfirmed import MAX_BACKOFF, ReplayPace, Unconfirmed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_confirmed_ranges_are_forgotten_wherever_they_fall():
    clock = Clock()
    window = Unconfirmed(60, clock)
    window.sent([1, 2, 3, 4, 5], replay=True)
    window.sent([9], replay=False)
    window.confirmed([(2, 3), (5, 5), (100, 200)])
    assert [s for s in range(10) if s in window] == [1, 4, 9]
    assert window.replayed == 2  # the live sample 9 does not count against the window
    window.confirmed([(0, 1_000_000)])  # wider than the window: scanned, not counted out
    assert len(window) == 0
    assert window.replayed == 0


def test_everything_unconfirmed_expires_when_the_oldest_waited_the_timeout():
    clock = Clock()
    window = Unconfirmed(60, clock)
    window.sent([4, 5], replay=True)
    clock.now += 30
    window.sent([6], replay=False)
    clock.now += 29.9
    assert window.expired() == []
    clock.now += 0.1
    assert sorted(window.expired()) == [4, 5, 6]
    assert len(window) == 0
    assert window.replayed == 0


def test_timeouts_in_a_row_back_off_and_a_confirmation_resets_them():
    clock = Clock()
    window = Unconfirmed(60, clock)
    waits = []
    for _ in range(7):
        window.sent([1], replay=True)
        waited = 0
        while not window.expired():
            clock.now += 1
            waited += 1
        waits.append(waited)
    assert waits == [60, 120, 240, 480, 960, 960, 960]
    assert window.backoff == MAX_BACKOFF
    window.sent([1], replay=True)
    window.confirmed([(7, 7)])  # any confirmation: the hub is there
    clock.now += 60
    assert window.expired() == [1]


def test_sending_again_restarts_a_samples_wait():
    clock = Clock()
    window = Unconfirmed(60, clock)
    window.sent([1, 2], replay=True)
    clock.now += 50
    window.sent([1], replay=True)  # sent again (a new connection)
    clock.now += 10
    assert sorted(window.expired()) == [1, 2]  # 2 is the oldest now; both go again
    assert window.replayed == 0


def test_the_pace_allows_its_rate_on_average():
    clock = Clock()
    pace = ReplayPace(100, clock)
    sent = 0
    for _ in range(1000):  # ten seconds in steps of 10 ms
        while pace.ready():
            pace.spent(30)
            sent += 30
        clock.now += 0.01
    # Never more than the rate allows plus the batch that opened the run; no less than
    # the rate less the batch still waiting for its time.
    assert 1000 - 30 <= sent <= 1000 + 30
