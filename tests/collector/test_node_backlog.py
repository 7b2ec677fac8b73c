"""The unconfirmed backlog each heartbeat reports, as BatchWriter stores it (real database)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.decode import Decoder, Limits, Reason
from collector.ingest import BatchWriter
from contract import topics
from tests.support.fleet import create_node, create_tenant, dead_letters

pytestmark = pytest.mark.integration

BACKLOG = """
SELECT buffer_depth, oldest_unconfirmed_age_s, backlog_growth_base, backlog_growing_since
FROM node_status WHERE node_id = %s
"""


@dataclass(frozen=True)
class Backlog:
    depth: int | None
    age_s: int | None
    base: int | None
    growing_since: datetime | None


class Node:
    """A node whose statuses are written as the collector writes them, each heartbeat
    `every` later (node clock and hub clock alike) unless told otherwise."""

    def __init__(self, database, every: timedelta = timedelta(seconds=60)) -> None:
        self.database = database
        self.id = create_node(database, create_tenant(database))
        self.ts = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        self.every = every

    def status(self, state: str = "online", ts: datetime | None = None, **fields: Any) -> None:
        if ts is None:
            self.ts += self.every
            ts = self.ts
        body = {"state": state, "ts": ts.isoformat(), "agent_version": "2.0.0", **fields}
        self.write([json.dumps(body).encode()], received_at=ts)

    def heartbeat(self, depth: int, age_s: int | None = None) -> None:
        if age_s is None:
            self.status(buffer_depth=depth)
        else:
            self.status(buffer_depth=depth, oldest_unconfirmed_age_s=age_s)

    def write(self, payloads: list[bytes], received_at: datetime) -> None:
        decoder = Decoder(Limits())
        batch = [decoder.decode(topics.status(self.id), p, received_at) for p in payloads]
        with self.database.connect() as conn:
            BatchWriter(conn).write(batch, datetime.now(UTC))

    def backlog(self) -> Backlog:
        with self.database.connect() as conn:
            return Backlog(*conn.execute(BACKLOG, (self.id,)).fetchone())


def test_a_heartbeat_stores_depth_and_age_and_an_old_agent_leaves_them_null(database):
    node = Node(database)
    node.heartbeat(12, age_s=40)
    assert node.backlog() == Backlog(12, 40, None, None)
    node.heartbeat(0)  # nothing waits: no age
    assert node.backlog() == Backlog(0, None, None, None)

    old_agent = Node(database)
    old_agent.status()
    assert old_agent.backlog() == Backlog(None, None, None, None)


def test_growth_starts_above_the_last_depth_and_ends_back_at_its_base(database):
    node = Node(database)
    node.heartbeat(3)
    node.heartbeat(3)
    assert node.backlog().growing_since is None  # a level is not growth
    node.heartbeat(10)
    started = node.ts
    assert node.backlog() == Backlog(10, None, 3, started)
    # Up and down, but never back to 3: still the same growth.
    for depth in (25, 18, 40, 4):
        node.heartbeat(depth)
    assert node.backlog() == Backlog(4, None, 3, started)
    node.heartbeat(3)
    assert node.backlog() == Backlog(3, None, None, None)
    # The next rise is a new growth, from the depth it rose from.
    node.heartbeat(2)
    node.heartbeat(5)
    assert node.backlog() == Backlog(5, None, 2, node.ts)


def test_jitter_and_a_draining_replay_are_not_growth(database):
    node = Node(database)
    lasted = []
    for depth in (1, 2, 1, 2, 2, 1, 0, 1, 0, 2, 0):
        node.heartbeat(depth)
        growing_since = node.backlog().growing_since
        lasted.append(node.ts - growing_since if growing_since else timedelta(0))
    assert max(lasted) == node.every  # never beyond the next heartbeat
    # A depth that rose and stays up is growth by depth alone (NodeBacklogStuck also
    # asks how long the oldest sample has waited: test_watchdog.py).
    for depth in (1, 1, 2, 1):
        node.heartbeat(depth)
    assert node.backlog().growing_since == node.ts - 3 * node.every
    # A replay draining with live samples in between: every rise falls back at once.
    for depth in (500, 420, 430, 350, 360, 250, 120, 0):
        node.heartbeat(depth, age_s=3600 if depth else None)
    assert node.backlog() == Backlog(0, None, None, None)


def test_only_a_newer_status_moves_the_backlog(database):
    node = Node(database)
    node.heartbeat(5)
    node.heartbeat(9)
    newest = node.backlog()
    # Redelivered, or late: an older heartbeat changes nothing, even in one batch.
    node.status(ts=node.ts - timedelta(seconds=60), buffer_depth=5)
    node.status(ts=node.ts, buffer_depth=1)
    assert node.backlog() == newest
    later = node.ts + timedelta(seconds=60)
    older = node.ts + timedelta(seconds=30)
    heartbeats = [
        json.dumps({"state": "online", "ts": at.isoformat(), "buffer_depth": depth}).encode()
        for at, depth in ((later, 20), (older, 2))
    ]
    node.write(heartbeats, received_at=later)
    assert node.backlog().depth == 20


def test_a_clock_once_far_ahead_does_not_freeze_the_backlog(database):
    node = Node(database)
    node.heartbeat(5)
    # Stamped a year ahead (received now): taken as of its arrival, not of its stamp.
    ahead = json.dumps(
        {"state": "online", "ts": (node.ts + timedelta(days=365)).isoformat(), "buffer_depth": 8}
    )
    node.write([ahead.encode()], received_at=node.ts + node.every)
    node.ts += node.every
    assert node.backlog().depth == 8
    node.heartbeat(2)  # the clock set right again
    assert node.backlog().depth == 2


def test_a_reconnect_forgets_the_backlog_and_an_offline_status_keeps_it(database):
    node = Node(database)
    node.heartbeat(4)
    node.heartbeat(30, age_s=300)
    # Offline (a last will carries the time it was set at; a clean stop, its own): the
    # last report stays, growth and all.
    node.status(state="offline", ts=node.ts - timedelta(hours=1))
    node.status(state="offline")
    assert node.backlog() == Backlog(30, 300, 4, node.ts - node.every)
    # Connecting again says nothing about the backlog: unknown until the next heartbeat,
    # and that one is not compared with what came before the outage.
    node.status()
    assert node.backlog() == Backlog(None, None, None, None)
    node.heartbeat(900, age_s=4000)
    assert node.backlog() == Backlog(900, 4000, None, None)


def test_an_impossible_depth_is_dead_lettered(database):
    node = Node(database)
    node.heartbeat(2**63)  # more than the bigint column holds: refused by the contract
    [(reason, *_)] = dead_letters(database, node.id)
    assert reason == Reason.IMPLAUSIBLE_VALUE
