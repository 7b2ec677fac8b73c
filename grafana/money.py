"""Energy and money on the dashboards: the savings dashboard, and the "today" and "this
month" figures other dashboards show.

Energy a meter counted over a gap (`gap_*`: the site was not observed) is shown apart and
never priced: add it to the observed energy to compare with the meter or the bill.

Every figure reads `energy_1h` (migration 0013): hourly energies with each site's local
time and the tariff in force, priced as docs/energy-and-money.md says. Days and months
are each site's local ones; amounts are summed per currency, never across currencies.
A range filters on `bucket` (what the aggregate is ordered and chunked by), so a query
reads only the hours it needs.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, dashboard, stat, table

from contract.fields import (
    BATTERY_CHARGE_KWH,
    BATTERY_DISCHARGE_KWH,
    BUCKET,
    GAP_GRID_EXPORT_KWH,
    GAP_GRID_IMPORT_KWH,
    GAP_PV_KWH,
    GRID_EXPORT_KWH,
    GRID_IMPORT_KWH,
    LOAD_KWH,
    PV_KWH,
)
from grafana.panels import NODE_FILTER_MANY, TIMESCALE, base, node_variable, sql_stat
from grafana.sql_query import Sql

# Columns of energy_1h beyond the aggregate's (migration 0013).
IMPORT_COST, EXPORT_REVENUE, GRID_ONLY_COST, SAVINGS = (
    "import_cost",
    "export_revenue",
    "grid_only_cost",
    "savings",
)
NET_COST = f"({IMPORT_COST} - {EXPORT_REVENUE})"
CURRENCY = "coalesce(currency, 'no tariff')"

# The site's local day and month, now; `bucket` bounds let the query skip older hours.
TODAY = (
    f"local_day = (now() AT TIME ZONE timezone)::date"
    f" AND {BUCKET.column} > now() - interval '26 hours'"
)
THIS_MONTH = (
    "date_trunc('month', local_day) = date_trunc('month', now() AT TIME ZONE timezone)"
    f" AND {BUCKET.column} > now() - interval '32 days'"
)
IN_RANGE = f"$__timeFilter({BUCKET.column}) AND {NODE_FILTER_MANY}"
# Seconds in a site's local day: 23, 24 or 25 hours.
DAY_SECONDS = (
    "extract(epoch FROM ((local_day + 1)::timestamp AT TIME ZONE timezone)"
    " - (local_day::timestamp AT TIME ZONE timezone))"
)
SELECTED_NODES = "cardinality(ARRAY[$node]::text[])"


def per_currency(amount: str, where: str) -> str:
    """An amount summed per currency over energy_1h rows matching `where`."""
    return f"""
    SELECT {CURRENCY} AS currency, coalesce(sum({amount}), 0) AS amount
    FROM energy_1h WHERE {where} GROUP BY 1 ORDER BY 1
    """


def money_stat(title: str, amount: str, where: str) -> stat.Panel:
    """A stat of an amount per currency (one value a currency) over rows matching `where`."""
    return sql_stat(title, per_currency(amount, where), decimals=2, per_row=True)


def _total(column: str) -> str:
    return f"SELECT coalesce(sum({column}), 0) AS value FROM energy_1h WHERE {IN_RANGE}"


def savings() -> dashboard.Dashboard:
    pv, load = str(PV_KWH.column), str(LOAD_KWH.column)
    imported, exported = str(GRID_IMPORT_KWH.column), str(GRID_EXPORT_KWH.column)
    money = f"""
        sum({IMPORT_COST}) AS "import cost", sum({EXPORT_REVENUE}) AS "export revenue",
        sum({NET_COST}) AS "net cost", sum({GRID_ONLY_COST}) AS "grid-only cost",
        sum({SAVINGS}) AS savings,
        100 * sum({SAVINGS}) / nullif(sum({GRID_ONLY_COST}), 0) AS "saved %"
    """
    return (
        base(
            "wattfleet-savings",
            "Savings and costs",
            "Energy, what it cost and earned at the tariff in force, what grid-only would"
            " have cost, and the savings, in each site's local days.",
        )
        .time("now-30d", "now")
        .with_variable(node_variable(multi=True))
        .with_panel(money_stat("Savings", SAVINGS, IN_RANGE))
        .with_panel(money_stat("Net grid cost (import - export)", NET_COST, IN_RANGE))
        .with_panel(money_stat("Grid-only cost", GRID_ONLY_COST, IN_RANGE))
        .with_panel(
            sql_stat(
                "Saved vs grid-only",
                f"""
                SELECT {CURRENCY} AS currency,
                    100 * sum({SAVINGS}) / nullif(sum({GRID_ONLY_COST}), 0) AS "saved %"
                FROM energy_1h WHERE {IN_RANGE} GROUP BY 1 ORDER BY 1
                """,
                "percent",
                1,
                per_row=True,
            )
        )
        .with_panel(sql_stat("PV energy", _total(pv), "kwatth", 1))
        .with_panel(sql_stat("Grid import", _total(imported), "kwatth", 1))
        .with_panel(sql_stat("Grid export", _total(exported), "kwatth", 1))
        .with_panel(
            sql_stat(
                "Grid import in gaps (meter, unpriced)",
                _total(str(GAP_GRID_IMPORT_KWH.column)),
                "kwatth",
                1,
            )
        )
        .with_panel(
            sql_stat(
                "Data coverage",
                f"""
                SELECT 100 * coalesce(sum(covered_s), 0) / ({SELECTED_NODES}
                    * extract(epoch FROM $__timeTo()::timestamptz - $__timeFrom()::timestamptz))
                    AS "coverage %"
                FROM energy_1h WHERE {IN_RANGE}
                """,
                "percent",
                1,
            )
        )
        .with_panel(
            barchart.Panel()
            .title("Energy per day")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT to_char(local_day, 'YYYY-MM-DD') AS day, sum({pv}) AS "PV",
                        sum({imported}) AS "import", sum({exported}) AS "export",
                        sum({load}) AS "load",
                        sum({BATTERY_CHARGE_KWH.column}) AS "battery charge",
                        sum({BATTERY_DISCHARGE_KWH.column}) AS "battery discharge"
                    FROM energy_1h WHERE {IN_RANGE}
                    GROUP BY local_day ORDER BY local_day
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
                    SELECT to_char(local_day, 'YYYY-MM-DD') || ' ' || {CURRENCY} AS day,
                        sum({IMPORT_COST}) AS "import cost",
                        sum({EXPORT_REVENUE}) AS "export revenue",
                        sum({GRID_ONLY_COST}) AS "grid-only cost", sum({SAVINGS}) AS savings
                    FROM energy_1h WHERE {IN_RANGE}
                    GROUP BY local_day, currency ORDER BY local_day, currency
                    """
                )
            )
            .height(8)
            .span(12)
        )
        .with_panel(
            barchart.Panel()
            .title("Data coverage per day")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT to_char(local_day, 'YYYY-MM-DD') AS day,
                        100 * coalesce(sum(covered_s), 0) / ({SELECTED_NODES} * max(day_s))
                            AS "coverage %"
                    FROM (SELECT local_day, covered_s, {DAY_SECONDS} AS day_s
                          FROM energy_1h WHERE {IN_RANGE}) d
                    GROUP BY local_day ORDER BY local_day
                    """
                )
            )
            .unit("percent")
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
                    SELECT to_char(local_day, 'YYYY-MM') AS month, {CURRENCY} AS currency,
                        sum({pv}) AS "PV kWh", sum({imported}) AS "import kWh",
                        sum({exported}) AS "export kWh", sum({load}) AS "load kWh",
                        {money},
                        sum({GAP_PV_KWH.column}) AS "PV kWh in gaps",
                        sum({GAP_GRID_IMPORT_KWH.column}) AS "import kWh in gaps",
                        sum({GAP_GRID_EXPORT_KWH.column}) AS "export kWh in gaps"
                    FROM energy_1h WHERE {IN_RANGE}
                    GROUP BY 1, 2 ORDER BY 1, 2
                    """
                )
            )
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("By tariff period")
            .datasource(TIMESCALE)
            .with_target(
                Sql(
                    f"""
                    SELECT coalesce(period, 'no tariff') AS period, {CURRENCY} AS currency,
                        sum({imported}) AS "import kWh", sum({exported}) AS "export kWh",
                        sum({load}) AS "load kWh", {money}
                    FROM energy_1h WHERE {IN_RANGE}
                    GROUP BY 1, 2 ORDER BY 1, 2
                    """
                )
            )
            .height(8)
            .span(24)
        )
    )
