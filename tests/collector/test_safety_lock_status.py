"""The safety lock and dynamic strategy each heartbeat reports, as BatchWriter stores
them in node_status, and the lock's history in node_events (real database)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.collector.test_node_backlog import Node

pytestmark = pytest.mark.integration

REPORTED = """
SELECT safety_locked, safety_lock_source, safety_lock_by, safety_lock_reason,
    safety_lock_command_id, strategy_enabled, strategy
FROM node_status WHERE node_id = %s
"""
STRATEGY = {"enabled": False, "name": "peak_shaving"}


def reported(node: Node) -> tuple[Any, ...]:
    with node.database.connect() as conn:
        return tuple(conn.execute(REPORTED, (node.id,)).fetchone())


def test_the_newest_heartbeat_says_whether_the_site_is_locked(database):
    node = Node(database)
    node.status()  # an agent that predates the lock
    assert reported(node) == (None,) * 7

    lock = {
        "locked": True,
        "source": "remote",
        "by": "admin@example.com",
        "reason": "storm warning",
        "since": node.ts.isoformat(),
        "remote_command_id": "cmd-1",
    }
    node.status(safety_lock=lock, strategy=STRATEGY)
    assert reported(node) == (
        True,
        "remote",
        "admin@example.com",
        "storm warning",
        "cmd-1",
        False,
        "peak_shaving",
    )
    # The will carries no lock: a site stays locked while its agent is away.
    node.status(state="offline")
    assert reported(node)[0] is True
    # Unlocked on site; a late heartbeat from before does not lock it again.
    node.status(safety_lock={"locked": False, "remote_command_id": "cmd-1"}, strategy=STRATEGY)
    node.status(ts=node.ts - timedelta(minutes=5), safety_lock=lock)
    assert reported(node) == (False, None, None, None, "cmd-1", False, "peak_shaving")

    with database.connect() as conn:
        history = conn.execute(
            "SELECT (detail->'safety_lock'->>'locked')::boolean, detail->'safety_lock'->>'by'"
            " FROM node_events WHERE node_id = %s AND detail ? 'safety_lock' ORDER BY ts",
            (node.id,),
        ).fetchall()
    assert history == [(True, "admin@example.com"), (True, "admin@example.com"), (False, None)]
