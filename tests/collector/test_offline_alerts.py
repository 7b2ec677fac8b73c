"""End to end: a node stops and returns; on-call hears about it exactly once each way.

Real Mosquitto, two real collectors (each running the watchdog), TimescaleDB, and
Debian's Alertmanager with the repo's config, notifying a local webhook."""

from __future__ import annotations

import json
import threading

import pytest

from contract import topics
from tests.support.fleet import create_tenant, enroll, mqtt_client, sample, scrape
from tests.support.services import wait_for

pytestmark = pytest.mark.e2e

OFFLINE_AFTER_S = 3
INTERVAL_S = 1


class TalkingNode:
    """A node that sends a sample every 0.2 s while `talking` is set, and stays connected
    when it falls silent (so no last will: only the watchdog can notice)."""

    def __init__(self, broker, node) -> None:
        self.node = node
        self.client = mqtt_client(broker, node.id, node.password)
        self.talking = threading.Event()
        self._stop = threading.Event()
        self.client.publish(
            topics.status(node.id),
            json.dumps({"state": "online", "ts": sample(node.id, 0)["timestamp"]}),
            qos=1,
            retain=True,
        )
        threading.Thread(target=self._talk, daemon=True).start()

    def _talk(self) -> None:
        seq = 0
        while not self._stop.wait(0.2):
            if self.talking.is_set():
                seq += 1
                self.client.publish(
                    topics.telemetry(self.node.id), json.dumps(sample(self.node.id, seq)), qos=1
                )

    def close(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()


def test_a_node_that_falls_silent_pages_once_and_resolves_once(
    database, broker, collector_factory, alerting
):
    manager, receiver = alerting
    collectors = [
        collector_factory(
            watchdog_interval_s=str(INTERVAL_S),
            offline_after_s=str(OFFLINE_AFTER_S),
            alertmanager_url=manager.url,
        ).start()
        for _ in range(2)
    ]
    tenant = create_tenant(database)
    with database.connect() as conn:
        slug = conn.execute("SELECT slug FROM tenants WHERE id = %s", (tenant,)).fetchone()[0]
    (node,) = enroll(database, broker, tenant)
    talker = TalkingNode(broker, node)
    try:
        talker.talking.set()
        wait_for(lambda: state(database, node.id) == "online", 15, "the node online")

        def ours(status):
            return [
                n
                for n in receiver.about("NodeOffline", status)
                if n["groupLabels"]["tenant"] == slug
            ]

        talker.talking.clear()
        # Within offline_after + one round (+ Alertmanager's group_wait of 1 s + slack).
        wait_for(lambda: ours("firing"), OFFLINE_AFTER_S + INTERVAL_S + 1 + 5, "the page")
        [page] = ours("firing")
        assert page["path"] == "/oncall/alerts"
        [alert] = page["alerts"]
        assert alert["labels"] == {
            "alertname": "NodeOffline",
            "node_id": node.id,
            "tenant": slug,
            "severity": "critical",
        }
        assert state(database, node.id) == "offline"

        talker.talking.set()
        wait_for(lambda: ours("resolved"), 15, "the resolution")
        # A few more rounds from both collectors change nothing: one page, one resolution.
        resolved_at = rounds(collectors)
        wait_for(lambda: rounds(collectors) >= resolved_at + 4, 20, "more watchdog rounds")
        assert len(ours("firing")) == 1
        assert len(ours("resolved")) == 1
        assert state(database, node.id) == "online"
        with database.connect() as conn:
            transitions = conn.execute(
                "SELECT state, source FROM node_events WHERE node_id = %s ORDER BY ts", (node.id,)
            ).fetchall()
        assert transitions[-2:] == [("offline", "watchdog"), ("online", "watchdog")]
    finally:
        talker.close()


def state(database, node_id):
    with database.connect() as conn:
        row = conn.execute("SELECT state FROM node_status WHERE node_id = %s", (node_id,))
        found = row.fetchone()
    return found[0] if found else None


def rounds(collectors) -> float:
    """Watchdog rounds run so far, by whichever collector held each."""
    return sum(
        scrape(c.metrics_port)["wattfleet_collector_watchdog_runs_total{outcome=leader}"]
        for c in collectors
    )
