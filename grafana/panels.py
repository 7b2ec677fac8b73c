"""Panel and dashboard builders the dashboards share, over Grafana's foundation SDK.

SQL names relations unqualified: a tenant organization's datasource logs in as the
tenant's role, whose search_path resolves them to `tenant_view` (its own rows only); the
admin organization's logs in as `wattfleet_grafana_admin`, which reads every tenant.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, dashboard, stat, timeseries
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import GraphDrawStyle

from grafana.datasources import TIMESCALE_TYPE, TIMESCALE_UID
from grafana.sql_query import Sql

TIMESCALE = model.DataSourceRef(type_val=TIMESCALE_TYPE, uid=TIMESCALE_UID)

NODE_FILTER_ONE = "node_id = '$node'"
NODE_FILTER_MANY = "node_id IN ($node)"
# The aggregates' finest bucket: a series over them never groups finer.
MIN_INTERVAL = "5m"


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    # No time zone of its own: Grafana shows the organization's, which the tenant sync
    # sets to the tenant's (control_api/grafana_sync.py).
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["wattfleet", "generated"])
        .timezone("")
        .refresh("30s")
        .time("now-24h", "now")
        .editable()
    )


def sql_stat(
    title: str,
    sql: str,
    unit: str = "none",
    decimals: int | None = None,
    span: int = 4,
    per_row: bool = False,
) -> stat.Panel:
    """A stat of the query's last row; `per_row`: one value per row, named by its text
    column (an amount per currency)."""
    reduce = common.ReduceDataOptions().calcs(["lastNotNull"])
    # Every field, text ones too (a state, a version), not only numbers.
    reduce = reduce.values(True) if per_row else reduce.fields("/.*/")
    panel = (
        stat.Panel()
        .title(title)
        .datasource(TIMESCALE)
        .with_target(Sql(sql))
        .unit(unit)
        .reduce_options(reduce)
        .height(4)
        .span(span)
    )
    return panel.decimals(decimals) if decimals is not None else panel


def series(title: str, sql: str, unit: str, bars: bool = False, span: int = 12) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(TIMESCALE)
        .with_target(Sql(sql).time_series())
        .unit(unit)
        .interval(MIN_INTERVAL)
        .height(8)
        .span(span)
    )
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS).fill_opacity(80)
    return panel


def node_variable(multi: bool) -> dashboard.QueryVariable:
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
