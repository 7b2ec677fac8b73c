"""Node liveness: marks silent nodes offline, and tells Alertmanager.

Every `watchdog_interval_s` each collector tries to run the watchdog inside one
transaction guarded by a transaction-scoped advisory lock, so exactly one collector
works per round however many run (the others skip it). A round:

1. marks `offline` (source `watchdog`) every node not heard from for
   `offline_after_s`, and `online` again a node the watchdog had marked offline that is
   sending telemetry again (a node's own offline status, its last will, stays until the
   node says otherwise); each change is a node event;
2. works out which alerts should fire: `NodeOffline` for offline nodes (until they have
   been offline for `stop_paging_after_s`), `ClockDrift` for online nodes whose clock
   is more than `clock_drift_alert_s` off, `NodeBacklogStuck` for online nodes whose
   unconfirmed backlog has grown for `backlog_stuck_after_s` (see below);
3. after the commit, posts every firing alert (re-sent each round, so Alertmanager
   keeps it) and every alert that stopped firing, once, as resolved.

What was sent lives in `node_alerts`, so another collector taking over continues
where this one stopped, and a resolution that could not be delivered is sent again.

A backlog is stuck when the node's heartbeats have shown it growing (above the depth it
grew from, collector/ingest.py) for `backlog_stuck_after_s` and its oldest unconfirmed
sample has waited at least that long too. The second condition is what tells a hub that
stopped confirming from a depth that rose a little and stays up while confirmations
flow (everything older than the limit is confirmed then). Agents that predate
confirmations report no age, and never raise it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from collector.alertmanager import Alert, AlertmanagerError, post_alerts
from collector.config import CollectorSettings
from collector.metrics import CollectorMetrics
from contract.failure_log import FailureLog

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key of the watchdog round ("wattfleet" "watchdog").
ROUND_LOCK_KEY = 0x5741_5454_5744_4F47

Clock = Callable[[], datetime]

MARK_OFFLINE = """
UPDATE node_status s SET state = 'offline', state_source = 'watchdog', updated_at = %(now)s
FROM nodes n
WHERE n.id = s.node_id AND n.enabled AND s.state <> 'offline'
  AND s.last_seen_at < %(silent_since)s
RETURNING s.node_id, n.tenant_id, s.last_seen_at
"""

MARK_BACK_ONLINE = """
UPDATE node_status s SET state = 'online', state_source = 'watchdog', updated_at = %(now)s
FROM nodes n
WHERE n.id = s.node_id AND s.state = 'offline' AND s.state_source = 'watchdog'
  AND s.last_seen_at >= %(silent_since)s
RETURNING s.node_id, n.tenant_id, s.last_seen_at
"""

INSERT_EVENT = """
INSERT INTO node_events (ts, node_id, tenant_id, state, source, detail)
VALUES (%s, %s, %s, %s, 'watchdog', %s)
ON CONFLICT (node_id, ts, state) DO NOTHING
"""

# What should be firing now, one row per alert, with what its annotations tell.
SHOULD_FIRE = """
WITH node AS (
    SELECT s.node_id, s.state, t.slug AS tenant, n.display_name, s.last_seen_at,
        s.clock_drift_s, s.buffer_depth, s.oldest_unconfirmed_age_s, s.backlog_growth_base,
        s.backlog_growing_since
    FROM node_status s JOIN nodes n ON n.id = s.node_id JOIN tenants t ON t.id = n.tenant_id
    WHERE n.enabled
)
SELECT 'NodeOffline' AS alertname, 'critical' AS severity, node.* FROM node
WHERE state = 'offline' AND last_seen_at >= %(paging_since)s
UNION ALL
SELECT 'ClockDrift', 'warning', node.* FROM node
WHERE state = 'online' AND abs(clock_drift_s) > %(drift_s)s
UNION ALL
SELECT 'NodeBacklogStuck', 'warning', node.* FROM node
WHERE state = 'online' AND backlog_growing_since <= %(growing_since)s
  AND oldest_unconfirmed_age_s >= %(stuck_s)s
"""


def _annotations(row: dict[str, Any]) -> dict[str, str]:
    where = f"{row['display_name'] or row['node_id']} ({row['tenant']})"
    if row["alertname"] == "NodeOffline":
        return {
            "summary": f"Node {where} is offline",
            "description": f"Last heard from at {row['last_seen_at'].isoformat()}.",
        }
    if row["alertname"] == "ClockDrift":
        return {
            "summary": f"Clock of node {where} is {row['clock_drift_s']:+.0f} s off",
            "description": "Timestamps from this node are unreliable; check its NTP.",
        }
    return {
        "summary": f"Unconfirmed backlog of node {where} keeps growing",
        "description": (
            f"{row['buffer_depth']} samples wait on the node (up from"
            f" {row['backlog_growth_base']} at {row['backlog_growing_since'].isoformat()}),"
            f" the oldest for {row['oldest_unconfirmed_age_s']} s. The node keeps them until"
            " the hub confirms them: check that the collectors commit and confirm, and"
            " that the node receives its confirmations (docs/operations.md)."
        ),
    }


@dataclass(frozen=True)
class RoundReport:
    went_offline: list[str]
    came_back: list[str]
    firing: list[Alert]
    resolved: list[Alert]


class Watchdog:
    def __init__(
        self,
        settings: CollectorSettings,
        metrics: CollectorMetrics,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or (lambda: datetime.now(UTC))
        self._database = FailureLog(log)
        self._alertmanager = FailureLog(log)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.settings.database_url, prepare_threshold=self.settings.prepare_threshold
        )

    def run(self) -> RoundReport | None:
        """One round, for the scheduler: never raises; failures are logged once at ERROR
        (then at DEBUG until they recover) and counted."""
        try:
            report = self.run_once()
        except psycopg.Error as exc:
            self.metrics.watchdog_runs_total.labels("failed").inc()
            self._database.failed("watchdog: %s", exc)
            return None
        if self._database.recover():
            log.info("watchdog: database reachable again")
        return report

    def run_once(self) -> RoundReport | None:
        """One round; None when another collector holds this round. Raises psycopg.Error."""
        now = self.clock()
        with self._connect() as conn, conn.transaction():
            leader = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (ROUND_LOCK_KEY,)
            ).fetchone()
            if not (leader and leader[0]):
                self.metrics.watchdog_runs_total.labels("standby").inc()
                return None
            went_offline, came_back = self._mark(conn, now)
            firing, resolved = self._reconcile_alerts(conn, now)
        self.metrics.watchdog_runs_total.labels("leader").inc()
        self.metrics.watchdog_last_run.set(now.timestamp())
        for node_id in went_offline:
            log.warning("node %s silent for %ss: offline", node_id, self.settings.offline_after_s)
        for node_id in came_back:
            log.info("node %s sending again: online", node_id)
        self._post(firing, resolved)
        return RoundReport(went_offline, came_back, firing, resolved)

    def _mark(self, conn: psycopg.Connection[Any], now: datetime) -> tuple[list[str], list[str]]:
        params = {
            "now": now,
            "silent_since": now - timedelta(seconds=self.settings.offline_after_s),
        }
        changes = []
        for sql, state in ((MARK_OFFLINE, "offline"), (MARK_BACK_ONLINE, "online")):
            rows = conn.execute(sql, params).fetchall()
            for node_id, tenant_id, last_seen_at in rows:
                detail = {"last_seen_at": last_seen_at.isoformat() if last_seen_at else None}
                conn.execute(INSERT_EVENT, (now, node_id, tenant_id, state, Jsonb(detail)))
            changes.append(sorted(row[0] for row in rows))
        counts = dict(
            conn.execute(
                "SELECT state, count(*) FROM node_status s JOIN nodes n ON n.id = s.node_id"
                " WHERE n.enabled AND state IN ('online', 'offline') GROUP BY state"
            ).fetchall()
        )
        self.metrics.nodes.labels("online").set(counts.get("online", 0))
        self.metrics.nodes.labels("offline").set(counts.get("offline", 0))
        return changes[0], changes[1]

    def _reconcile_alerts(
        self, conn: psycopg.Connection[Any], now: datetime
    ) -> tuple[list[Alert], list[Alert]]:
        should = {}
        rows = conn.cursor(row_factory=dict_row).execute(
            SHOULD_FIRE,
            {
                "paging_since": now - timedelta(seconds=self.settings.stop_paging_after_s),
                "drift_s": self.settings.clock_drift_alert_s,
                "growing_since": now - timedelta(seconds=self.settings.backlog_stuck_after_s),
                "stuck_s": self.settings.backlog_stuck_after_s,
            },
        )
        for row in rows:
            labels = {
                "alertname": row["alertname"],
                "node_id": row["node_id"],
                "tenant": row["tenant"],
                "severity": row["severity"],
            }
            should[(row["node_id"], row["alertname"])] = (labels, _annotations(row))
        self.metrics.nodes_backlog_stuck.set(
            sum(1 for _, name in should if name == "NodeBacklogStuck")
        )
        stored = {
            (node_id, name): (state, starts_at)
            for node_id, name, state, starts_at in conn.execute(
                "SELECT node_id, alertname, state, starts_at FROM node_alerts"
            )
        }
        for key, (labels, texts) in should.items():
            if key not in stored or stored[key][0] == "resolving":
                conn.execute(
                    """
                    INSERT INTO node_alerts
                        (node_id, alertname, state, starts_at, labels, annotations)
                    VALUES (%s, %s, 'firing', %s, %s, %s)
                    ON CONFLICT (node_id, alertname) DO UPDATE SET state = 'firing',
                        starts_at = EXCLUDED.starts_at, ends_at = NULL,
                        labels = EXCLUDED.labels, annotations = EXCLUDED.annotations
                    """,
                    (*key, now, Jsonb(labels), Jsonb(texts)),
                )
            else:
                conn.execute(
                    "UPDATE node_alerts SET labels = %s, annotations = %s"
                    " WHERE node_id = %s AND alertname = %s",
                    (Jsonb(labels), Jsonb(texts), *key),
                )
        stopped = [k for k, (state, _) in stored.items() if state == "firing" and k not in should]
        still_offline = {
            row[0]
            for row in conn.execute("SELECT node_id FROM node_status WHERE state = 'offline'")
        }
        for node_id, name in stopped:
            if name == "NodeOffline" and node_id in still_offline:
                # Offline beyond stop_paging_after_s: stop re-sending, without claiming it
                # resolved (Alertmanager lets it lapse at its endsAt).
                conn.execute(
                    "DELETE FROM node_alerts WHERE node_id = %s AND alertname = %s",
                    (node_id, name),
                )
                continue
            conn.execute(
                "UPDATE node_alerts SET state = 'resolving', ends_at = %s"
                " WHERE node_id = %s AND alertname = %s",
                (now, node_id, name),
            )
        # Re-sent until the next rounds have had every chance to send them again.
        hold = now + timedelta(seconds=4 * self.settings.watchdog_interval_s)
        firing, resolved = [], []
        for state, starts_at, ends_at, labels, texts in conn.execute(
            "SELECT state, starts_at, ends_at, labels, annotations FROM node_alerts"
            " ORDER BY node_id, alertname"
        ):
            # Never before its start: collectors' clocks may disagree a little, and
            # Alertmanager refuses an alert that ends before it starts.
            if state == "firing":
                firing.append(Alert(labels, texts, starts_at, max(hold, starts_at)))
            else:
                resolved.append(Alert(labels, texts, starts_at, max(ends_at, starts_at)))
        return firing, resolved

    def _post(self, firing: list[Alert], resolved: list[Alert]) -> None:
        url = self.settings.alertmanager_url
        if not (firing or resolved):
            return
        if url is not None:
            try:
                post_alerts(url, firing + resolved)
            except AlertmanagerError as exc:
                self.metrics.alertmanager_errors_total.inc()
                self._alertmanager.failed("watchdog: alerts not delivered, will retry: %s", exc)
                return
            if self._alertmanager.recover():
                log.info("watchdog: alerts delivered again")
            self.metrics.alerts_sent_total.labels("firing").inc(len(firing))
            self.metrics.alerts_sent_total.labels("resolved").inc(len(resolved))
        # Delivered (or no Alertmanager to tell): resolutions are done with.
        if resolved:
            with self._connect() as conn, conn.transaction():
                for alert in resolved:
                    # Only if it did not start firing again meanwhile.
                    conn.execute(
                        "DELETE FROM node_alerts WHERE node_id = %s AND alertname = %s"
                        " AND state = 'resolving'",
                        (alert.labels["node_id"], alert.labels["alertname"]),
                    )
