"""The liveness watchdog against the database and a real Alertmanager."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from collector.config import CollectorSettings
from collector.metrics import CollectorMetrics
from collector.watchdog import RoundReport, Watchdog
from tests.support.fleet import create_node, create_tenant
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def watchdog(database, clock, alertmanager_url=None, **settings) -> Watchdog:
    config = CollectorSettings(
        database_url=database.url,
        database_prepared_statements=database.prepared_statements,
        alertmanager_url=alertmanager_url,
        offline_after_s=300,
        watchdog_interval_s=30,
        **settings,
    )
    return Watchdog(config, CollectorMetrics(CollectorRegistry()), clock)


def seen(database, node_id, at, state="online", drift=0.0):
    with database.connect() as conn:
        conn.execute(
            """
            INSERT INTO node_status (node_id, state, last_seen_at, clock_drift_s)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (node_id) DO UPDATE SET state = EXCLUDED.state,
                last_seen_at = EXCLUDED.last_seen_at, clock_drift_s = EXCLUDED.clock_drift_s,
                state_source = 'status'
            """,
            (node_id, state, at, drift),
        )


def events(database, node_id):
    with database.connect() as conn:
        return conn.execute(
            "SELECT state, source FROM node_events WHERE node_id = %s ORDER BY ts", (node_id,)
        ).fetchall()


def leader_round(dog: Watchdog) -> RoundReport:
    report = dog.run_once()
    assert report is not None, "no other collector holds the round here"
    return report


def mine(alerts, node_id):
    return [a for a in alerts if a.labels["node_id"] == node_id]


def test_silent_node_goes_offline_fires_and_resolves_once_when_it_returns(database):
    clock = Clock()
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    dog = watchdog(database, clock)
    seen(database, node, clock.now - timedelta(seconds=200))

    first = leader_round(dog)
    assert node not in first.went_offline
    assert mine(first.firing, node) == []

    clock.now += timedelta(seconds=120)  # 320 s of silence
    second = leader_round(dog)
    assert node in second.went_offline
    [alert] = mine(second.firing, node)
    assert alert.labels == {
        "alertname": "NodeOffline",
        "node_id": node,
        "tenant": alert.labels["tenant"],
        "severity": "critical",
    }
    assert alert.ends_at > clock.now  # held firing until re-sent
    assert events(database, node)[-1] == ("offline", "watchdog")

    clock.now += timedelta(seconds=30)
    assert [a.starts_at for a in mine(leader_round(dog).firing, node)] == [alert.starts_at]

    seen(database, node, clock.now, state="offline")  # telemetry again, state still inferred
    with database.connect() as conn:
        conn.execute("UPDATE node_status SET state_source = 'watchdog' WHERE node_id = %s", (node,))
    back = leader_round(dog)
    assert node in back.came_back
    assert mine(back.firing, node) == []
    [resolved] = mine(back.resolved, node)
    assert resolved.ends_at == clock.now
    assert events(database, node)[-1] == ("online", "watchdog")
    # Resolved once: the next round has nothing to say about this node.
    after = leader_round(dog)
    assert mine(after.firing, node) == mine(after.resolved, node) == []


def test_a_node_that_said_it_is_offline_stays_offline_until_it_says_otherwise(database):
    clock = Clock()
    node = create_node(database, create_tenant(database))
    # Its last will arrived, and then straggling telemetry refreshed last_seen.
    seen(database, node, clock.now, state="offline")
    report = leader_round(watchdog(database, clock))
    assert node not in report.came_back
    assert [a.labels["alertname"] for a in mine(report.firing, node)] == ["NodeOffline"]


def test_clock_drift_fires_while_online_only(database):
    clock = Clock()
    node = create_node(database, create_tenant(database))
    seen(database, node, clock.now, drift=75.0)
    dog = watchdog(database, clock)
    [drift] = mine(leader_round(dog).firing, node)
    assert drift.labels["alertname"] == "ClockDrift"
    assert drift.labels["severity"] == "warning"
    assert "+75 s off" in drift.annotations["summary"]
    seen(database, node, clock.now, drift=3.0)
    assert [a.labels["alertname"] for a in mine(leader_round(dog).resolved, node)] == ["ClockDrift"]


def test_paging_stops_after_a_week_offline_without_claiming_resolution(database):
    clock = Clock()
    node = create_node(database, create_tenant(database))
    seen(database, node, clock.now - timedelta(days=6, hours=23), state="offline")
    dog = watchdog(database, clock)
    assert len(mine(leader_round(dog).firing, node)) == 1
    clock.now += timedelta(hours=2)
    report = leader_round(dog)
    assert mine(report.firing, node) == []
    assert mine(report.resolved, node) == []


def test_alerts_reach_alertmanager_and_resolve_there(database, alerting):
    manager, _receiver = alerting
    clock = Clock()
    node = create_node(database, create_tenant(database))
    seen(database, node, clock.now - timedelta(minutes=10))
    dog = watchdog(database, clock, manager.url)
    leader_round(dog)

    def state_at_alertmanager():
        found = [a for a in manager.alerts() if a["labels"].get("node_id") == node]
        return found[0]["status"]["state"] if found else None

    wait_for(lambda: state_at_alertmanager() == "active", 10, "the alert at Alertmanager")
    seen(database, node, clock.now)
    leader_round(dog)
    wait_for(lambda: state_at_alertmanager() is None, 10, "the alert resolved at Alertmanager")


def test_undelivered_resolution_is_sent_again(database, alerting):
    manager, _ = alerting
    clock = Clock()
    node = create_node(database, create_tenant(database))
    seen(database, node, clock.now - timedelta(minutes=10))
    unreachable = watchdog(database, clock, "http://127.0.0.1:9")  # nothing listens
    leader_round(unreachable)
    seen(database, node, clock.now)
    assert len(mine(leader_round(unreachable).resolved, node)) == 1
    assert unreachable.metrics.alertmanager_errors_total._value.get() == 2
    # Still pending: the next round (here, with Alertmanager back) sends it again.
    assert len(mine(leader_round(watchdog(database, clock, manager.url)).resolved, node)) == 1
    with database.connect() as conn:
        left = conn.execute("SELECT count(*) FROM node_alerts WHERE node_id = %s", (node,))
        assert left.fetchone()[0] == 0
