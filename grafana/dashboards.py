"""The dashboards, built with Grafana's foundation SDK.

SQL names relations unqualified: a tenant organization's datasource logs in as the
tenant's role, whose search_path resolves them to `tenant_view` (its own rows only); the
admin organization's logs in as `wattfleet_grafana_admin`, which reads every tenant.
Panels over ranges longer than a few minutes read the continuous aggregates
(`telemetry_5m`, `_1h`, `_1d`), never raw rows; raw `telemetry` is read only for the
latest sample of a node. Hours and days are UTC, like the aggregates. Columns of
`telemetry`, its aggregates and `optimizer_decisions` are named through the field table
(`contract.fields`), so a dashboard cannot name one the table does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grafana_foundation_sdk.builders import (
    alertgroups,
    barchart,
    common,
    dashboard,
    piechart,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import GraphDrawStyle, TimeZoneUtc

from contract.fields import (
    BATTERY_POWER_W,
    BUCKET,
    COST,
    DECISION,
    GRID_EXPORT_KWH,
    GRID_IMPORT_KWH,
    GRID_MODE,
    GRID_ONLY_COST,
    GRID_POWER_W,
    GRID_PRICE,
    LOAD_KWH,
    LOAD_POWER_W,
    PV_KWH,
    SAVINGS,
    SOC_AVG,
    SOC_MAX,
    SOC_MIN,
    SOC_PERCENT,
    SOLAR_POWER_W,
    TS,
)
from grafana.datasources import (
    ALERTMANAGER_UID,
    PROMETHEUS_UID,
    TIMESCALE_TYPE,
    TIMESCALE_UID,
)
from grafana.sql_query import Sql

TIMESCALE = model.DataSourceRef(type_val=TIMESCALE_TYPE, uid=TIMESCALE_UID)
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
ALERTMANAGER = model.DataSourceRef(type_val="alertmanager", uid=ALERTMANAGER_UID)

NODE_FILTER_ONE = "node_id = '$node'"
NODE_FILTER_MANY = "node_id IN ($node)"


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    # "admin": the admin organization only; "tenant": every organization. Also the
    # folder under grafana/dashboards/ its JSON is written to.
    audience: str
    build: Callable[[], dashboard.Dashboard]


def _base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["wattfleet", "generated"])
        .timezone(TimeZoneUtc)
        .refresh("30s")
        .time("now-24h", "now")
        .editable()
    )


def _sql_stat(
    title: str, sql: str, unit: str = "none", decimals: int | None = None, span: int = 4
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .datasource(TIMESCALE)
        .with_target(Sql(sql))
        .unit(unit)
        # Every field, text ones too (a state, a version), not only numbers.
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).fields("/.*/"))
    )
    panel = panel.height(4).span(span)
    return panel.decimals(decimals) if decimals is not None else panel


def _backlog_stat(title: str, column: str, unit: str, no_value: str) -> stat.Panel:
    """The node's unconfirmed backlog as its newest heartbeat reported it (node_status)."""
    sql = f'SELECT {column} AS "{title}" FROM node_status WHERE {NODE_FILTER_ONE}'
    return _sql_stat(title, sql, unit, span=6).no_value(no_value)


def _node_variable(multi: bool) -> dashboard.QueryVariable:
    variable = (
        dashboard.QueryVariable("node")
        .label("Node")
        .datasource(TIMESCALE)
        .query(
            "SELECT id AS __value, coalesce(nullif(display_name, ''), id) AS __text"
            " FROM nodes ORDER BY 2"
        )
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
    )
    return variable.multi(True).include_all(True) if multi else variable


# -- Fleet overview (admin) ---------------------------------------------------------------

LATEST_POWER = f"""
SELECT coalesce(sum({{column}}), 0) AS "W" FROM (
    SELECT DISTINCT ON (node_id) node_id, {{column}} FROM telemetry
    WHERE {TS.column} > now() - interval '15 minutes' ORDER BY node_id, {TS.column} DESC
) latest
"""


def fleet_overview() -> dashboard.Dashboard:
    counts = (
        "SELECT count(*) FILTER (WHERE s.state = '{state}') AS nodes"
        " FROM nodes n LEFT JOIN node_status s ON s.node_id = n.id WHERE n.enabled"
    )
    return (
        _base("wattfleet-fleet", "Fleet overview", "Every site: who is online, power, savings.")
        .with_panel(_sql_stat("Nodes online", counts.format(state="online")))
        .with_panel(_sql_stat("Nodes offline", counts.format(state="offline")))
        .with_panel(
            _sql_stat("PV power now", LATEST_POWER.format(column=SOLAR_POWER_W.column), "watt")
        )
        .with_panel(
            _sql_stat(
                "Battery power now (+ discharging)",
                LATEST_POWER.format(column=BATTERY_POWER_W.column),
                "watt",
            )
        )
        .with_panel(
            _sql_stat(
                "Fleet savings today",
                f"SELECT coalesce(sum({SAVINGS.column}), 0) AS savings FROM telemetry_5m"
                f" WHERE {BUCKET.column} >= date_trunc('day', now())",
                "currencyPLN",
                2,
            )
        )
        .with_panel(
            _sql_stat(
                "Fleet savings this month",
                f"SELECT coalesce(sum({SAVINGS.column}), 0) AS savings FROM telemetry_1h"
                f" WHERE {BUCKET.column} >= date_trunc('month', now())",
                "currencyPLN",
                2,
            )
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
                    """
                    SELECT n.id AS node, n.display_name AS name, t.slug AS tenant,
                        coalesce(s.state, 'unknown') AS state, s.last_seen_at AS "last seen",
                        s.agent_version AS agent, s.clock_drift_s AS "clock drift s"
                    FROM nodes n JOIN tenants t ON t.id = n.tenant_id
                    LEFT JOIN node_status s ON s.node_id = n.id
                    ORDER BY 4 DESC, 1
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


# -- Site (every org) ---------------------------------------------------------------------


def _series(title: str, sql: str, unit: str, bars: bool = False) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(TIMESCALE)
        .with_target(Sql(sql).time_series())
        .unit(unit)
        .height(8)
        .span(12)
    )
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS).fill_opacity(80)
    return panel


def _site_series(columns: str) -> str:
    return f"""
    SELECT $__timeGroupAlias({BUCKET.column}, $__interval), {columns}
    FROM telemetry_5m
    WHERE $__timeFilter({BUCKET.column}) AND {NODE_FILTER_ONE}
    GROUP BY 1 ORDER BY 1
    """


def _latest(column: str, alias: str) -> str:
    """The node's latest raw sample's `column`, as `alias` (SQL, quoted if need be)."""
    return (
        f"SELECT {column} AS {alias} FROM telemetry WHERE {NODE_FILTER_ONE}"
        f" ORDER BY {TS.column} DESC LIMIT 1"
    )


def site() -> dashboard.Dashboard:
    return (
        _base(
            "wattfleet-site",
            "Site",
            "One site: battery, PV, load, grid, decisions, commands, unconfirmed backlog.",
        )
        .with_variable(_node_variable(multi=False))
        .with_panel(_sql_stat("State", f"SELECT state FROM node_status WHERE {NODE_FILTER_ONE}"))
        .with_panel(
            _sql_stat(
                "Last seen",
                f'SELECT last_seen_at AS "last seen" FROM node_status WHERE {NODE_FILTER_ONE}',
                "dateTimeFromNow",
            )
        )
        .with_panel(_sql_stat("Battery", _latest(SOC_PERCENT.column, '"SOC"'), "percent", 1))
        .with_panel(_sql_stat("Grid mode", _latest(GRID_MODE.column, "mode")))
        .with_panel(_sql_stat("Price now", _latest(GRID_PRICE.column, "price"), "currencyPLN", 2))
        .with_panel(
            _sql_stat(
                "Agent version",
                f"SELECT agent_version AS version FROM node_status WHERE {NODE_FILTER_ONE}",
            )
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
            _series(
                "Battery state of charge",
                _site_series(
                    f'avg({SOC_AVG.column}) AS "SOC", min({SOC_MIN.column}) AS "min",'
                    f' max({SOC_MAX.column}) AS "max"'
                ),
                "percent",
            )
        )
        .with_panel(
            _series(
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
            _series(
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
            _series(
                "Grid price", _site_series(f'avg({GRID_PRICE.column}) AS "price"'), "currencyPLN"
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
    )


# -- Savings and costs (every org) --------------------------------------------------------

PEAK = (
    f"CASE WHEN extract(hour FROM {BUCKET.column}) >= $peak_start"
    f" AND extract(hour FROM {BUCKET.column}) < $peak_end THEN 'peak' ELSE 'off-peak' END"
)


def _constant(name: str, value: str, label: str) -> dashboard.CustomVariable:
    return (
        dashboard.CustomVariable(name)
        .label(label)
        .values(value)
        .current(model.VariableOption(selected=True, text=value, value=value))
    )


def savings() -> dashboard.Dashboard:
    bucket, pv_kwh, load_kwh = BUCKET.column, PV_KWH.column, LOAD_KWH.column
    grid_import_kwh, grid_export_kwh = GRID_IMPORT_KWH.column, GRID_EXPORT_KWH.column
    cost, grid_only_cost, savings = COST.column, GRID_ONLY_COST.column, SAVINGS.column
    totals = f"""
    SELECT coalesce(sum({{column}}), 0) AS value FROM telemetry_1h
    WHERE $__timeFilter({bucket}) AND {NODE_FILTER_MANY}
    """
    return (
        _base(
            "wattfleet-savings",
            "Savings and costs",
            "Energy, cost, what grid-only would have cost, and the savings (UTC days).",
        )
        .time("now-30d", "now")
        .with_variable(_node_variable(multi=True))
        .with_variable(_constant("peak_start", "17", "Peak from (UTC hour)"))
        .with_variable(_constant("peak_end", "21", "Peak until (UTC hour)"))
        .with_panel(_sql_stat("Savings", totals.format(column=savings), "currencyPLN", 2))
        .with_panel(_sql_stat("Cost", totals.format(column=cost), "currencyPLN", 2))
        .with_panel(
            _sql_stat("Grid-only cost", totals.format(column=grid_only_cost), "currencyPLN", 2)
        )
        .with_panel(
            _sql_stat(
                "Saved vs grid-only",
                f"""
                SELECT 100 * sum({savings}) / nullif(sum({grid_only_cost}), 0) AS "saved %"
                FROM telemetry_1h WHERE $__timeFilter({bucket}) AND {NODE_FILTER_MANY}
                """,
                "percent",
                1,
            )
        )
        .with_panel(_sql_stat("PV energy", totals.format(column=pv_kwh), "kwatth", 1))
        .with_panel(_sql_stat("Grid import", totals.format(column=grid_import_kwh), "kwatth", 1))
        .with_panel(
            barchart.Panel()
            .title("Energy per day")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT {bucket} AS time, sum({pv_kwh}) AS "PV",
                        sum({grid_import_kwh}) AS "import", sum({grid_export_kwh}) AS "export",
                        sum({load_kwh}) AS "load"
                    FROM telemetry_1d WHERE $__timeFilter({bucket}) AND {NODE_FILTER_MANY}
                    GROUP BY 1 ORDER BY 1
                    """
                )
            )
            .unit("kwatth")
            .height(8)
            .span(12)
        )
        .with_panel(
            barchart.Panel()
            .title("Money per day")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT {bucket} AS time, sum({cost}) AS "cost",
                        sum({grid_only_cost}) AS "grid-only cost", sum({savings}) AS "savings"
                    FROM telemetry_1d WHERE $__timeFilter({bucket}) AND {NODE_FILTER_MANY}
                    GROUP BY 1 ORDER BY 1
                    """
                )
            )
            .unit("currencyPLN")
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Per month")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT to_char(date_trunc('month', {bucket}), 'YYYY-MM') AS month,
                        sum({pv_kwh}) AS "PV kWh", sum({grid_import_kwh}) AS "import kWh",
                        sum({grid_export_kwh}) AS "export kWh", sum({load_kwh}) AS "load kWh",
                        sum({cost}) AS cost, sum({grid_only_cost}) AS "grid-only cost",
                        sum({savings}) AS savings,
                        100 * sum({savings}) / nullif(sum({grid_only_cost}), 0) AS "saved %"
                    FROM telemetry_1d WHERE $__timeFilter({bucket}) AND {NODE_FILTER_MANY}
                    GROUP BY 1 ORDER BY 1
                    """
                )
            )
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Peak vs off-peak")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT {PEAK} AS period, sum({grid_import_kwh}) AS "import kWh",
                        sum({grid_export_kwh}) AS "export kWh", sum({cost}) AS cost,
                        sum({grid_only_cost}) AS "grid-only cost", sum({savings}) AS savings
                    FROM telemetry_1h WHERE $__timeFilter({bucket}) AND {NODE_FILTER_MANY}
                    GROUP BY 1 ORDER BY 1
                    """
                )
            )
            .height(8)
            .span(12)
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
        _base("wattfleet-stack", "Stack health", "The hub watching itself (Prometheus).")
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


DASHBOARDS = (
    DashboardSpec("wattfleet-fleet", "admin", fleet_overview),
    DashboardSpec("wattfleet-site", "tenant", site),
    DashboardSpec("wattfleet-savings", "tenant", savings),
    DashboardSpec("wattfleet-stack", "admin", stack_health),
)
