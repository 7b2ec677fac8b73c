"""The liveness watchdog against the database and a real Alertmanager."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from collector.alertmanager import Alert, post_alerts
from collector.config import CollectorSettings
from collector.decode import Decoder, Limits
from collector.ingest import BatchWriter
from collector.metrics import CollectorMetrics
from collector.watchdog import RoundReport, Watchdog
from contract import topics
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


def status(database, node_id, at, state="online", **backlog):
    """The node's status (a heartbeat when it carries `buffer_depth`), stamped `at` by the
    node and received then, written as the collector writes it."""
    body = json.dumps({"state": state, "ts": at.isoformat(), **backlog}).encode()
    message = Decoder(Limits()).decode(topics.status(node_id), body, at)
    with database.connect() as conn:
        BatchWriter(conn).write([message], at)


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


def named(alerts, node_id, alertname):
    return [a for a in mine(alerts, node_id) if a.labels["alertname"] == alertname]


def stuck_count(report: RoundReport) -> int:
    return sum(a.labels["alertname"] == "NodeBacklogStuck" for a in report.firing)


def test_a_backlog_growing_while_online_fires_and_resolves_at_alertmanager(database, alerting):
    manager, _ = alerting
    clock = Clock()
    clock.now -= timedelta(minutes=17)  # so that it resolves now, not in Alertmanager's future
    node = create_node(database, create_tenant(database))
    dog = watchdog(database, clock, manager.url)  # backlog_stuck_after_s: 900 by default
    status(database, node, clock.now, buffer_depth=2, oldest_unconfirmed_age_s=5)
    # Nothing confirmed any more: 6 more samples a heartbeat, the oldest ageing with them.
    for minute in range(1, 16):
        clock.now += timedelta(seconds=60)
        age = 5 + 60 * minute
        status(database, node, clock.now, buffer_depth=2 + 6 * minute, oldest_unconfirmed_age_s=age)
        report = leader_round(dog)
        assert named(report.firing, node, "NodeBacklogStuck") == [], minute
    grew_from = clock.now - timedelta(seconds=14 * 60)
    clock.now += timedelta(seconds=60)  # growing for 900 s now
    status(database, node, clock.now, buffer_depth=98, oldest_unconfirmed_age_s=965)
    report = leader_round(dog)
    [alert] = mine(report.firing, node)
    assert alert.labels == {
        "alertname": "NodeBacklogStuck",
        "node_id": node,
        "tenant": alert.labels["tenant"],
        "severity": "warning",
    }
    assert alert.annotations["summary"].startswith("Unconfirmed backlog of node ")
    since = grew_from.isoformat()
    assert alert.annotations["description"].startswith(
        f"98 samples wait on the node (up from 2 at {since}), the oldest for 965 s."
    )
    assert dog.metrics.nodes_backlog_stuck._value.get() == stuck_count(report) >= 1

    def state_at_alertmanager():
        found = [a for a in manager.alerts() if a["labels"].get("node_id") == node]
        return found[0]["status"]["state"] if found else None

    wait_for(lambda: state_at_alertmanager() == "active", 10, "the alert at Alertmanager")
    # Confirmations again: drained back to where it grew from.
    clock.now += timedelta(seconds=60)
    status(database, node, clock.now, buffer_depth=2, oldest_unconfirmed_age_s=3)
    report = leader_round(dog)
    assert [a.labels["alertname"] for a in mine(report.resolved, node)] == ["NodeBacklogStuck"]
    wait_for(lambda: state_at_alertmanager() is None, 10, "the alert resolved at Alertmanager")


def test_while_the_fleet_wide_alert_fires_node_alerts_are_inhibited(database, alerting):
    manager, _ = alerting
    clock = Clock()
    clock.now -= timedelta(minutes=4)
    node = create_node(database, create_tenant(database))
    dog = watchdog(database, clock, manager.url, backlog_stuck_after_s=120)
    for minute in range(4):
        status(database, node, clock.now, buffer_depth=10 * minute, oldest_unconfirmed_age_s=300)
        clock.now += timedelta(seconds=60)
    assert named(leader_round(dog).firing, node, "NodeBacklogStuck")

    def state_at_alertmanager():
        found = [a for a in manager.alerts() if a["labels"].get("node_id") == node]
        return found[0]["status"]["state"] if found else None

    wait_for(lambda: state_at_alertmanager() == "active", 10, "the node's alert")
    # As Prometheus posts it (prometheus/rules/wattfleet.yml).
    labels = {"alertname": "BacklogsStuckFleetWide", "severity": "warning", "service": "collector"}
    post_alerts(manager.url, [Alert(labels, {}, clock.now, clock.now + timedelta(minutes=5))])
    wait_for(lambda: state_at_alertmanager() == "suppressed", 10, "the node's alert inhibited")


def test_a_draining_replay_a_level_that_stays_up_and_an_old_agent_do_not_fire(database):
    clock = Clock()
    tenant = create_tenant(database)
    draining, level, old_agent = (create_node(database, tenant) for _ in range(3))
    dog = watchdog(database, clock)
    status(database, draining, clock.now, buffer_depth=1, oldest_unconfirmed_age_s=1)
    status(database, level, clock.now, buffer_depth=0)
    status(database, old_agent, clock.now, buffer_depth=0)
    # Back after an hour away (it connects, then its heartbeat): the replay drains, live
    # samples in between. A healthy node's depth steps up and stays (its oldest sample
    # is seconds old). An old agent's depth grows, but no age says it is unconfirmed.
    clock.now += timedelta(seconds=30)
    status(database, draining, clock.now)
    for minute in range(1, 31):
        clock.now += timedelta(seconds=60)
        depth = max(0, 1800 - 60 * minute + (10 if minute % 2 else 0))
        status(database, draining, clock.now, buffer_depth=depth, oldest_unconfirmed_age_s=3600)
        status(database, level, clock.now, buffer_depth=1 + minute % 2, oldest_unconfirmed_age_s=2)
        status(database, old_agent, clock.now, buffer_depth=6 * minute)
        report = leader_round(dog)
        for node in (draining, level, old_agent):
            assert mine(report.firing, node) == [], (node, minute)
    with database.connect() as conn:
        growing = conn.execute(
            "SELECT node_id FROM node_status WHERE node_id = ANY(%s)"
            " AND backlog_growing_since <= %s ORDER BY node_id",
            ([draining, level, old_agent], clock.now - timedelta(seconds=900)),
        ).fetchall()
    # By depth alone the level and the old agent have been growing: the age tells.
    assert sorted(growing) == sorted([(level,), (old_agent,)])


def test_an_offline_node_does_not_fire_it(database):
    clock = Clock()
    node = create_node(database, create_tenant(database))
    dog = watchdog(database, clock, backlog_stuck_after_s=120)
    for minute in range(4):
        status(database, node, clock.now, buffer_depth=10 * minute, oldest_unconfirmed_age_s=300)
        clock.now += timedelta(seconds=60)
    assert [a.labels["alertname"] for a in mine(leader_round(dog).firing, node)] == [
        "NodeBacklogStuck"
    ]
    # It stops cleanly: offline, its last report (still growing) kept for the dashboard.
    status(database, node, clock.now, state="offline")
    report = leader_round(dog)
    assert [a.labels["alertname"] for a in mine(report.firing, node)] == ["NodeOffline"]
    assert [a.labels["alertname"] for a in mine(report.resolved, node)] == ["NodeBacklogStuck"]
    assert stuck_count(report) == dog.metrics.nodes_backlog_stuck._value.get()
    clock.now += timedelta(minutes=30)
    assert named(leader_round(dog).firing, node, "NodeBacklogStuck") == []
