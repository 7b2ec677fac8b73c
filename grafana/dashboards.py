"""The dashboards, built with Grafana's foundation SDK (shared builders in
grafana/panels.py, energy and money in grafana/money.py).

Panels over ranges longer than a few minutes read the continuous aggregates
(`telemetry_5m`, `_1h`), the energy views over them (`energy_1h`) or the local days
priced from those (`money_1d`), never raw rows; raw `telemetry` is read only for the
latest sample of a node. Days, months and tariff hours are each site's local ones.
Columns of `telemetry`, its aggregates and `optimizer_decisions` are named through the
field table (`contract.fields`), so a dashboard cannot name one the table does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grafana_foundation_sdk.builders import (
    alertgroups,
    dashboard,
    piechart,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.models import dashboard as model

from contract.fields import (
    BATTERY_POWER_W,
    BUCKET,
    DECISION,
    GRID_EXPORT_KWH,
    GRID_IMPORT_KWH,
    GRID_MODE,
    GRID_POWER_W,
    LOAD_POWER_W,
    MODE,
    REASON,
    SOC_AVG,
    SOC_MAX,
    SOC_MIN,
    SOC_PERCENT,
    SOLAR_POWER_W,
    TS,
)
from grafana.datasources import ALERTMANAGER_UID, PROMETHEUS_UID
from grafana.money import (
    LOCAL_TODAY,
    NET_COST,
    SAVINGS,
    THIS_MONTH,
    TODAY,
    money_stat,
    priced_energy,
    savings,
)
from grafana.panels import (
    NODE_FILTER_ONE,
    TIMESCALE,
    base,
    node_variable,
    series,
    sql_stat,
)
from grafana.sql_query import Sql

PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
ALERTMANAGER = model.DataSourceRef(type_val="alertmanager", uid=ALERTMANAGER_UID)


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    # "admin": the admin organization only; "tenant": every organization. Also the
    # folder under grafana/dashboards/ its JSON is written to.
    audience: str
    build: Callable[[], dashboard.Dashboard]


def _backlog_stat(title: str, column: str, unit: str, no_value: str) -> stat.Panel:
    """The node's unconfirmed backlog as its newest heartbeat reported it (node_status)."""
    sql = f'SELECT {column} AS "{title}" FROM node_status WHERE {NODE_FILTER_ONE}'
    return sql_stat(title, sql, unit, span=6).no_value(no_value)


# -- Fleet overview (admin) ---------------------------------------------------------------

# The fleet's power now: each node's latest sample (kept in node_status, migration 0015)
# if it is recent; reading it touches no telemetry chunk, however much history is kept.
LATEST_POWER = """
SELECT coalesce(sum({column}), 0) AS "W" FROM node_status
WHERE latest_ts > now() - interval '15 minutes'
"""


# The energy in a battery now: its latest SOC (recent only, as LATEST_POWER) times the
# nameplate capacity its node reports (node_inventory, migration 0018), in kWh. `s`:
# node_status, `i`: node_inventory.
STORED_KWH = (
    f"CASE WHEN s.latest_ts > now() - interval '15 minutes'"
    f" THEN s.{SOC_PERCENT.column} * i.battery_capacity_wh / 100000 END"
)
# What a fleet table shows of each node's inventory (`s`, `i` as above).
INVENTORY_COLUMNS = f"""
    i.model AS "inverter model", i.firmware, i.serial,
    i.battery_capacity_wh / 1000 AS "battery kWh", {STORED_KWH} AS "stored kWh"
"""

# Sites offline first, then those never heard from, then the rest; by name within.
STATE_ORDER = (
    "CASE coalesce(s.state, 'unknown') WHEN 'offline' THEN 0 WHEN 'unknown' THEN 1 ELSE 2 END"
)

# A table's cell for a site that reports itself safety-locked (empty otherwise).
LOCKED_CELL = (
    "CASE WHEN s.safety_locked THEN 'locked (' || s.safety_lock_source || ')' END"
    ' AS "safety lock"'
)


# Seconds since the site's local midnight (the first, where the clock goes back then:
# migration 0023); none at that instant itself, rather than a division by zero that
# would fail the whole table.
SINCE_LOCAL_MIDNIGHT_S = """nullif(extract(epoch FROM now() - public.local_midnight(
    (now() AT TIME ZONE max(timezone))::date, max(timezone))), 0)"""


def fleet_overview() -> dashboard.Dashboard:
    counts = (
        "SELECT count(*) FILTER (WHERE s.state = '{state}') AS nodes"
        " FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id WHERE n.enabled"
    )
    return (
        base("wattfleet-fleet", "Fleet overview", "Every site: who is online, power, savings.")
        .with_panel(sql_stat("Nodes online", counts.format(state="online")))
        .with_panel(sql_stat("Nodes offline", counts.format(state="offline")))
        .with_panel(
            sql_stat("PV power now", LATEST_POWER.format(column=SOLAR_POWER_W.column), "watt")
        )
        .with_panel(
            sql_stat(
                "Battery power now (+ discharging)",
                LATEST_POWER.format(column=BATTERY_POWER_W.column),
                "watt",
            )
        )
        .with_panel(
            money_stat("Fleet savings today (each site's local day)", SAVINGS, "energy_1h", TODAY)
        )
        .with_panel(
            money_stat("Fleet savings this month", SAVINGS, priced_energy(THIS_MONTH, "true"))
        )
        .with_panel(
            piechart.Panel()
            .title("Nodes by state")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    """
                    SELECT coalesce(s.state, 'unknown') AS state, count(*) AS nodes
                    FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id
                    WHERE n.enabled GROUP BY 1 ORDER BY 1
                    """
                )
            )
            .height(8)
            .span(6)
        )
        .with_panel(
            table.Panel()
            .title("Nodes")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT n.id AS node, n.display_name AS name, t.slug AS tenant,
                        coalesce(s.state, 'unknown') AS state, s.last_seen_at AS "last seen",
                        s.agent_version AS agent, s.clock_drift_s AS "clock drift s",
                        {LOCKED_CELL}, {INVENTORY_COLUMNS}
                    FROM nodes n JOIN tenants t ON t.id = n.tenant_id
                    LEFT JOIN node_status s ON s.node_id = n.id
                    LEFT JOIN node_inventory i ON i.node_id = n.id
                    ORDER BY {STATE_ORDER}, 3, 1
                    """
                )
            )
            .height(8)
            .span(12)
        )
        .with_panel(
            alertgroups.Panel().title("Active alerts").datasource(ALERTMANAGER).height(8).span(6)
        )
    )


# -- Sites (every org) --------------------------------------------------------------------


def sites() -> dashboard.Dashboard:
    """The organization's own fleet: every site it has, offline first."""
    return base(
        "wattfleet-sites",
        "Sites",
        "Every site of this organization: state, battery, PV, its savings today and this"
        " month (local days), and its inverter and battery.",
    ).with_panel(
        table.Panel()
        .title("Sites")
        .datasource(TIMESCALE)
        .with_target(
            Sql(
                f"""
                SELECT n.id AS site, n.display_name AS name,
                    coalesce(s.state, 'unknown') AS state, s.last_seen_at AS "last seen",
                    l.{SOC_PERCENT.column} AS "SOC %", l.{SOLAR_POWER_W.column} AS "PV W",
                    m.today AS "savings today", m.month AS "savings this month", m.currency,
                    m.coverage AS "coverage today %", {LOCKED_CELL}, {INVENTORY_COLUMNS}
                FROM nodes n
                LEFT JOIN node_status s ON s.node_id = n.id
                LEFT JOIN node_inventory i ON i.node_id = n.id
                LEFT JOIN LATERAL (
                    SELECT s.{SOC_PERCENT.column}, s.{SOLAR_POWER_W.column}
                    WHERE s.latest_ts > now() - interval '15 minutes'
                ) l ON true
                LEFT JOIN (
                    SELECT node_id, sum({SAVINGS}) FILTER (WHERE {LOCAL_TODAY}) AS today,
                        -- One currency, or no amount: never a sum across currencies.
                        CASE WHEN count(DISTINCT currency) <= 1 THEN sum({SAVINGS}) END
                            AS month,
                        CASE WHEN count(DISTINCT currency) <= 1 THEN max(currency)
                            ELSE 'mixed' END AS currency,
                        100 * sum(covered_s) FILTER (WHERE {LOCAL_TODAY})
                            / {SINCE_LOCAL_MIDNIGHT_S} AS coverage
                    FROM {priced_energy(THIS_MONTH, "true")}
                    GROUP BY node_id
                ) m ON m.node_id = n.id
                WHERE n.enabled
                ORDER BY {STATE_ORDER}, 2, 1
                """
            )
        )
        .height(20)
        .span(24)
    )


def _site_series(columns: str, source: str | None = None) -> str:
    """A site's series grouped by the panel's interval, read from the coarsest aggregate
    that has it: hourly buckets once the interval is an hour or more (a 90-day range is
    2,160 rows, not 25,920), 5-minute ones below. The interval is a constant, so the
    planner drops the other branch before it runs (`source`: one relation only)."""

    def branch(relation: str, condition: str) -> str:
        return f"""
        SELECT $__timeGroupAlias({BUCKET.column}, $__interval), {columns}
        FROM {relation}
        WHERE $__timeFilter({BUCKET.column}) AND {NODE_FILTER_ONE}{condition}
        GROUP BY 1
        """

    if source is not None:
        return branch(source, "") + " ORDER BY 1"
    fine = branch("telemetry_5m", " AND interval '$__interval' < interval '1 hour'")
    coarse = branch("telemetry_1h", " AND interval '$__interval' >= interval '1 hour'")
    return f"SELECT * FROM ({fine} UNION ALL {coarse}) series ORDER BY 1"


def _latest(column: str, alias: str) -> str:
    """The node's latest sample's `column`, as `alias` (SQL, quoted if need be), as the
    collector keeps it in node_status."""
    return f"SELECT {column} AS {alias} FROM node_status WHERE {NODE_FILTER_ONE}"


# The tariff's prices at this moment in the site's local time (site_tariffs, 0013).
PRICE_NOW = f"""
SELECT t.import_prices[h.slot] AS "import", t.export_prices[h.slot] AS "export", t.currency
FROM site_tariffs t CROSS JOIN LATERAL (
    SELECT (extract(isodow FROM now() AT TIME ZONE t.timezone)::int - 1) * 24
        + extract(hour FROM now() AT TIME ZONE t.timezone)::int + 1 AS slot
) h
WHERE t.{NODE_FILTER_ONE} AND now() >= t.starts_at
    AND (t.ends_at IS NULL OR now() < t.ends_at)
"""
SITE_TODAY = f"{NODE_FILTER_ONE} AND {TODAY}"
# The remote debug tunnel as the node's newest heartbeat said (migration 0015): "OPEN
# until ..." while an admin can log in to the Pi, else how the last one ended; "off"
# when remote access is not enabled on the node.
REMOTE_ACCESS = f"""
SELECT CASE
    WHEN tunnel_state IN ('open', 'opening') THEN upper(tunnel_state)
        || coalesce(' until ' || to_char(tunnel_until, 'YYYY-MM-DD HH24:MI TZ'), '')
    WHEN tunnel_public_key IS NULL THEN 'off'
    ELSE coalesce(tunnel_state, 'off')
END AS "remote access"
FROM node_status WHERE {NODE_FILTER_ONE}
"""
# The safety lock and dynamic strategy as the node's newest heartbeat said (migration
# 0019): "LOCKED (local: why)" while control commands are refused.
SAFETY_LOCK = f"""
SELECT CASE
    WHEN safety_locked THEN 'LOCKED (' || safety_lock_source
        || coalesce(': ' || safety_lock_reason, '') || ')'
    WHEN safety_locked IS NULL THEN 'not reported'
    ELSE 'off'
END AS "safety lock"
FROM node_status WHERE {NODE_FILTER_ONE}
"""
STRATEGY = f"""
SELECT CASE
    WHEN strategy_enabled THEN 'on: ' || strategy
    WHEN strategy_enabled IS NULL THEN 'not reported'
    ELSE 'off (self-consumption)'
END AS "strategy"
FROM node_status WHERE {NODE_FILTER_ONE}
"""


def _inventory(columns: str) -> str:
    """The node's inventory as it last reported (node_inventory)."""
    return f"SELECT {columns} FROM node_inventory WHERE {NODE_FILTER_ONE}"


# The latest SOC as energy: STORED_KWH for the one node.
STORED_NOW = f"""
SELECT {STORED_KWH} AS "kWh"
FROM node_status s JOIN node_inventory i ON i.node_id = s.node_id WHERE s.{NODE_FILTER_ONE}
"""
# The battery's energy over time: its SOC times the capacity it reports now (a
# replaced battery rescales its history).
STORED_SERIES = (
    f"avg({SOC_AVG.column}) * (SELECT battery_capacity_wh / 100000 FROM node_inventory"
    f' WHERE {NODE_FILTER_ONE}) AS "stored kWh"'
)
# Each change of the node's inventory, newest first: `path: from -> to; ...`.
INVENTORY_CHANGES = f"""
SELECT h.changed_at AS time,
    (SELECT string_agg(format('%s: %s -> %s', c.path, coalesce(c.change->>'from', '-'),
                              coalesce(c.change->>'to', '-')), '; ' ORDER BY c.path)
     FROM jsonb_each(h.changes) AS c(path, change)) AS changes
FROM node_inventory_history h WHERE h.{NODE_FILTER_ONE}
ORDER BY h.changed_at DESC LIMIT 20
"""


def site() -> dashboard.Dashboard:
    return (
        base(
            "wattfleet-site",
            "Site",
            "One site: battery, PV, load, grid, prices, savings, decisions, commands,"
            " unconfirmed backlog, remote access, safety lock, dynamic strategy, inverter and"
            " battery.",
        )
        .with_variable(node_variable(multi=False))
        .with_panel(sql_stat("State", f"SELECT state FROM node_status WHERE {NODE_FILTER_ONE}"))
        .with_panel(sql_stat("Remote access", REMOTE_ACCESS).no_value("off"))
        .with_panel(sql_stat("Safety lock", SAFETY_LOCK).no_value("not reported"))
        .with_panel(sql_stat("Dynamic strategy", STRATEGY).no_value("not reported"))
        .with_panel(
            sql_stat(
                "Last seen",
                f'SELECT last_seen_at AS "last seen" FROM node_status WHERE {NODE_FILTER_ONE}',
                "dateTimeFromNow",
            )
        )
        .with_panel(sql_stat("Battery", _latest(SOC_PERCENT.column, '"SOC"'), "percent", 1))
        .with_panel(sql_stat("Grid mode", _latest(GRID_MODE.column, "mode")))
        .with_panel(sql_stat("Price now (per kWh)", PRICE_NOW, decimals=2).no_value("no tariff"))
        .with_panel(
            sql_stat(
                "Agent version",
                f"SELECT agent_version AS version FROM node_status WHERE {NODE_FILTER_ONE}",
            )
        )
        .with_panel(
            sql_stat(
                "Inverter", _inventory("concat_ws(' ', manufacturer, model) AS inverter")
            ).no_value("not reported")
        )
        .with_panel(sql_stat("Firmware", _inventory("firmware")).no_value("not reported"))
        .with_panel(sql_stat("Serial number", _inventory("serial")).no_value("not reported"))
        .with_panel(
            sql_stat(
                "Battery capacity",
                _inventory('battery_capacity_wh / 1000 AS "kWh"'),
                "kwatth",
                1,
            ).no_value("not reported")
        )
        .with_panel(sql_stat("Battery energy now", STORED_NOW, "kwatth", 1))
        .with_panel(money_stat("Savings today", SAVINGS, "energy_1h", SITE_TODAY))
        .with_panel(money_stat("Net grid cost today", NET_COST, "energy_1h", SITE_TODAY))
        .with_panel(
            money_stat("Savings this month", SAVINGS, priced_energy(THIS_MONTH, NODE_FILTER_ONE))
        )
        # What the node holds until the hub confirms it (its heartbeat says; null from
        # agents that do not). Growing while the node is online raises NodeBacklogStuck.
        .with_panel(_backlog_stat("Buffered samples", "buffer_depth", "none", "not reported"))
        .with_panel(
            _backlog_stat("Oldest unconfirmed", "oldest_unconfirmed_age_s", "s", "none reported")
        )
        .with_panel(
            _backlog_stat(
                "Backlog growing since", "backlog_growing_since", "dateTimeFromNow", "not growing"
            )
        )
        .with_panel(
            _backlog_stat(
                "Backlog reported", "backlog_reported_at", "dateTimeFromNow", "not reported"
            )
        )
        .with_panel(
            series(
                "Battery state of charge",
                _site_series(
                    f'avg({SOC_AVG.column}) AS "SOC", min({SOC_MIN.column}) AS "min",'
                    f' max({SOC_MAX.column}) AS "max"'
                ),
                "percent",
            )
        )
        .with_panel(series("Battery energy (kWh)", _site_series(STORED_SERIES), "kwatth"))
        .with_panel(
            series(
                "Power",
                _site_series(
                    f'avg({SOLAR_POWER_W.column}) AS "PV", avg({LOAD_POWER_W.column}) AS "load",'
                    f' avg({GRID_POWER_W.column}) AS "grid (+ import)",'
                    f' avg({BATTERY_POWER_W.column}) AS "battery (+ discharge)"'
                ),
                "watt",
            )
        )
        .with_panel(
            series(
                "Grid import / export",
                _site_series(
                    f'sum({GRID_IMPORT_KWH.column}) AS "import",'
                    f' -sum({GRID_EXPORT_KWH.column}) AS "export"'
                ),
                "kwatth",
                bars=True,
            )
        )
        .with_panel(
            series(
                "Data coverage",
                # The seconds observed per bucket of the panel's interval (at least the
                # aggregate's 5 minutes, the panel's minimum interval).
                _site_series(
                    "100 * sum(covered_s) / extract(epoch FROM interval '$__interval')"
                    ' AS "coverage %"'
                ),
                "percent",
            )
        )
        .with_panel(
            series(
                "Tariff prices (per kWh)",
                _site_series(
                    'avg(import_price) AS "import", avg(export_price) AS "export"', "energy_1h"
                ),
                "none",
            )
        )
        .with_panel(
            statetimeline.Panel()
            .title("Optimizer decisions")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT {TS.column} AS time, {DECISION.column} FROM optimizer_decisions
                    WHERE $__timeFilter({TS.column}) AND {NODE_FILTER_ONE} ORDER BY {TS.column}
                    """
                ).time_series()
            )
            .height(6)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Recent decisions")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT {TS.column} AS time, {DECISION.column} AS decision,
                        {MODE.column} AS mode, {REASON.column} AS reason,
                        battery_setpoint_w AS "battery setpoint W",
                        target_soc_percent AS "target SOC %"
                    FROM optimizer_decisions
                    WHERE $__timeFilter({TS.column}) AND {NODE_FILTER_ONE}
                    ORDER BY {TS.column} DESC LIMIT 20
                    """
                )
            )
            .height(6)
            .span(12)
        )
        .with_panel(
            statetimeline.Panel()
            .title("Online / offline")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT ts AS time, state FROM node_events
                    WHERE $__timeFilter(ts) AND {NODE_FILTER_ONE} ORDER BY ts
                    """
                ).time_series()
            )
            .height(6)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Recent commands")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT issued_at AS issued, type, state, detail, updated_at AS updated
                    FROM commands WHERE {NODE_FILTER_ONE}
                    ORDER BY issued_at DESC LIMIT 20
                    """
                )
            )
            .height(8)
            .span(24)
        )
        .with_panel(
            table.Panel()
            .title("Inventory changes")
            .datasource(TIMESCALE)
            .with_target(Sql(INVENTORY_CHANGES))
            .height(6)
            .span(24)
        )
    )


# -- Stack health (admin, Prometheus) -----------------------------------------------------


def _prom(title: str, unit: str, *queries: tuple[str, str]) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(PROMETHEUS).unit(unit).height(8).span(12)
    for expr, legend in queries:
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend))
    return panel


def stack_health() -> dashboard.Dashboard:
    rate = "[$__rate_interval]"
    return (
        base("wattfleet-stack", "Stack health", "The hub watching itself (Prometheus).")
        .time("now-6h", "now")
        .with_panel(
            _prom(
                "Ingest rate",
                "rows/s",
                (f"sum(rate(wattfleet_collector_samples_written_total{rate}))", "written"),
                (f"sum(rate(wattfleet_collector_samples_duplicate_total{rate}))", "duplicates"),
            )
        )
        .with_panel(
            _prom(
                "Dead letters by reason",
                "msg/s",
                (
                    f"sum by (reason) (rate(wattfleet_collector_dead_letters_total{rate}))",
                    "{{reason}}",
                ),
            )
        )
        .with_panel(
            _prom(
                "Batch commit latency",
                "s",
                (
                    "histogram_quantile(0.5, sum by (le)"
                    f" (rate(wattfleet_collector_commit_seconds_bucket{rate})))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (le)"
                    f" (rate(wattfleet_collector_commit_seconds_bucket{rate})))",
                    "p95",
                ),
            )
        )
        .with_panel(
            _prom(
                "End-to-end lag",
                "s",
                (
                    "histogram_quantile(0.95, sum by (le)"
                    f" (rate(wattfleet_collector_end_to_end_lag_seconds_bucket{rate})))",
                    "p95",
                ),
            )
        )
        .with_panel(
            _prom(
                "Watchdog rounds",
                "short",
                (
                    f"sum by (outcome) (increase(wattfleet_collector_watchdog_runs_total{rate}))",
                    "{{outcome}}",
                ),
                (
                    "time() - max(wattfleet_collector_watchdog_last_run_timestamp_seconds)",
                    "seconds since the last round",
                ),
            )
        )
        .with_panel(
            _prom(
                "Nodes",
                "short",
                ("max by (state) (wattfleet_collector_nodes)", "{{state}}"),
            )
        )
        .with_panel(
            _prom(
                "Control API",
                "req/s",
                (
                    f"sum by (status) (rate(wattfleet_api_requests_total{rate}))",
                    "HTTP {{status}}",
                ),
                (
                    f"sum by (outcome) (rate(wattfleet_api_commands_total{rate}))",
                    "commands {{outcome}}",
                ),
            )
        )
        .with_panel(_prom("Scrape targets up", "short", ("up", "{{job}} {{instance}}")))
    )


# -- Audit (admin) ------------------------------------------------------------------------


# Refusals of who the caller is or what it may do: a wrong login (401), a role's 403, a
# look at another tenant's object (answered 404, stored as denied).
def _denied(row: str = "") -> str:
    return f"{row}outcome = 'denied' AND $__timeFilter({row}ts)"


def audit_dashboard() -> dashboard.Dashboard:
    """Who was refused, from where, and at what (audit_log, read by the admin role
    without the rows' parameters: migration 0014)."""
    return (
        base("wattfleet-audit", "Audit", "Denied requests: who, from where, at what.")
        .time("now-7d", "now")
        .with_panel(
            sql_stat(
                "Denied requests", f"SELECT count(*) AS denied FROM audit_log WHERE {_denied()}"
            )
        )
        .with_panel(
            sql_stat(
                "Callers denied",
                "SELECT count(DISTINCT (coalesce(actor_email, ''), coalesce(client_addr, '')))"
                f" AS callers FROM audit_log WHERE {_denied()}",
            )
        )
        .with_panel(
            table.Panel()
            .title("Denied by caller")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT actor_email AS actor, client_addr AS "client address",
                        count(*) AS denied, max(ts) AS "last"
                    FROM audit_log WHERE {_denied()}
                    GROUP BY 1, 2 ORDER BY 3 DESC, 4 DESC LIMIT 50
                    """
                )
            )
            .height(8)
            .span(16)
        )
        .with_panel(
            table.Panel()
            .title("Recent denied requests")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT a.ts AS "time", a.actor_email AS actor, t.slug AS tenant,
                        a.action, a.status_code AS status, a.node_id AS node,
                        a.client_addr AS "client address"
                    FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id
                    WHERE {_denied("a.")}
                    ORDER BY a.id DESC LIMIT 200
                    """
                )
            )
            .height(12)
            .span(24)
        )
    )


DASHBOARDS = (
    DashboardSpec("wattfleet-fleet", "admin", fleet_overview),
    DashboardSpec("wattfleet-audit", "admin", audit_dashboard),
    DashboardSpec("wattfleet-sites", "tenant", sites),
    DashboardSpec("wattfleet-site", "tenant", site),
    DashboardSpec("wattfleet-savings", "tenant", savings),
    DashboardSpec("wattfleet-stack", "admin", stack_health),
)
