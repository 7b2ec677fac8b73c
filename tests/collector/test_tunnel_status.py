"""The remote debug tunnel each heartbeat reports, as BatchWriter stores it in
node_status (real database)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.collector.test_node_backlog import Node
from tests.support.fleet import dead_letters

pytestmark = pytest.mark.integration

TUNNEL = """
SELECT tunnel_state, tunnel_until, tunnel_remote_port, tunnel_detail, tunnel_public_key
FROM node_status WHERE node_id = %s
"""
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDWkWxL0vVqf1Y1PjE3bIzw1Vd6n2S5I3b1v2GJpRk8x"


def tunnel(node: Node) -> tuple[Any, ...]:
    with node.database.connect() as conn:
        return tuple(conn.execute(TUNNEL, (node.id,)).fetchone())


def test_the_newest_heartbeat_says_what_the_tunnel_is(database):
    node = Node(database)
    node.status()  # an agent that predates tunnels
    assert tunnel(node) == (None, None, None, None, None)

    until = node.ts + timedelta(minutes=31)
    node.status(
        tunnel={
            "state": "open",
            "until": until.isoformat(),
            "remote_port": 20022,
            "bastion": "bastion.example.com",
            "detail": "for admin@example.com: inverter check",
            "public_key": KEY,
        }
    )
    assert tunnel(node) == ("open", until, 20022, "for admin@example.com: inverter check", KEY)

    # A late heartbeat from before does not reopen it.
    closed = {"state": "closed", "detail": "closed by ops@example.com", "public_key": KEY}
    node.status(tunnel=closed)
    node.status(ts=node.ts - timedelta(minutes=5), tunnel={"state": "open", "remote_port": 1})
    assert tunnel(node) == ("closed", None, None, "closed by ops@example.com", KEY)

    # Each report stays in node_events: the tunnel's history.
    with database.connect() as conn:
        history = conn.execute(
            "SELECT detail->'tunnel'->>'state', detail->'tunnel'->>'detail' FROM node_events"
            " WHERE node_id = %s AND detail ? 'tunnel' AND ts > %s ORDER BY ts",
            (node.id, until - timedelta(minutes=31)),
        ).fetchall()
    assert history == [
        ("open", "for admin@example.com: inverter check"),
        ("closed", "closed by ops@example.com"),
    ]


def test_a_node_going_offline_closes_its_open_tunnel(database):
    node = Node(database)
    node.status(tunnel={"state": "open", "remote_port": 20022, "public_key": KEY})
    node.status("offline")
    assert tunnel(node) == ("closed", None, 20022, "the agent went offline", KEY)


def test_a_malformed_tunnel_report_is_a_dead_letter(database):
    node = Node(database)
    node.status(tunnel={"state": "wide open", "remote_port": 20022})
    [(reason, detail, _payload)] = dead_letters(database, node.id)
    assert "tunnel.state" in detail, (reason, detail)
    with database.connect() as conn:
        assert conn.execute(TUNNEL, (node.id,)).fetchone() is None
