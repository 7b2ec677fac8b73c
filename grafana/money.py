"""Energy and money on the dashboards: the savings dashboard, and the "today" and "this
month" figures other dashboards show.

Energy a meter counted over a gap (`gap_*`: the site was not observed) is shown apart and
never priced: add it to the observed energy to compare with the meter or the bill.

Every figure sums local days priced once by a job (`money_1d`, migration 0021) and hours
priced at query time (`energy_1h`, migration 0013: hourly energies with each site's local
time and the tariff in force, priced as docs/energy-and-money.md says): `priced_energy`
takes each whole local day in range that the job has priced from `money_1d`, every other
hour (the range's edges, today, days not priced yet or invalidated by a tariff or zone
change) from `energy_1h`; the sums are the same. Days and months are each site's local
ones; amounts are summed per currency, never across currencies. Ranges filter on
`bucket` and `day_start` (what the two are ordered and chunked by).
"""

from __future__ import annotations

from dataclasses import dataclass

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

KWH = tuple(
    str(column.column)
    for column in (
        PV_KWH,
        GRID_IMPORT_KWH,
        GRID_EXPORT_KWH,
        LOAD_KWH,
        BATTERY_CHARGE_KWH,
        BATTERY_DISCHARGE_KWH,
        GAP_PV_KWH,
        GAP_GRID_IMPORT_KWH,
        GAP_GRID_EXPORT_KWH,
    )
)
# What priced_energy's rows have: energy_1h's and money_1d's columns alike.
COLUMNS = (
    "node_id, tenant_id, timezone, local_day, day_start, day_end, currency, period,"
    f" covered_s, {', '.join(KWH)}, {IMPORT_COST}, {EXPORT_REVENUE}, {GRID_ONLY_COST},"
    f" {SAVINGS}"
)
# A local day lasts at most 25 hours: one ending after an instant starts after it less
# this (an hour of margin).
DAY_MARGIN = "interval '26 hours'"


@dataclass(frozen=True)
class Span:
    """Which hours a figure sums: `hours`, a condition on energy_1h's rows whose buckets it
    bounds to [`start`, `end`] (SQL instants); `days`, the condition on money_1d's rows
    (local days) that holds exactly for the days whose every hour `hours` takes."""

    hours: str
    days: str
    start: str
    end: str


# The dashboard's time range ($__timeFilter is inclusive at both ends). A day's last
# hourly bucket starts before its end, on a whole UTC hour.
PICKED = Span(
    hours=f"$__timeFilter({BUCKET.column})",
    days="day_start >= $__timeFrom()::timestamptz"
    " AND day_end <= date_trunc('hour', $__timeTo()::timestamptz) + interval '1 hour'",
    start="$__timeFrom()::timestamptz",
    end="$__timeTo()::timestamptz",
)
# The site's local month, now; `bucket` bounds let the query skip older hours.
MONTH = "date_trunc('month', local_day) = date_trunc('month', now() AT TIME ZONE timezone)"
THIS_MONTH = Span(
    hours=f"{MONTH} AND {BUCKET.column} > now() - interval '32 days'",
    days=f"{MONTH} AND day_start > now() - interval '32 days'",
    start="now() - interval '32 days'",
    end="now()",
)
# The site's local day, now: never a whole priced day, so energy_1h's hours only.
LOCAL_TODAY = "local_day = (now() AT TIME ZONE timezone)::date"
TODAY = f"{LOCAL_TODAY} AND {BUCKET.column} > now() - interval '26 hours'"
# Seconds in a site's local day: 23, 24 or 25 hours.
DAY_SECONDS = "extract(epoch FROM day_end - day_start)"
SELECTED_NODES = "cardinality(ARRAY[$node]::text[])"


def priced_energy(span: Span, nodes: str) -> str:
    """The rows (COLUMNS) whose sums are the figures of `span` for the sites `nodes` (a
    condition on node_id): money_1d's days that `span` takes whole, and energy_1h's hours
    of `span` outside them.

    energy_1h is read over two ranges only: the first 26 hours (the days cut by the
    range's start) and from `cut` on, the earliest of: 26 hours before the range's end,
    before where the job stopped, and the first hour it must price again for these sites
    (money_1d_pending). Every hour between lies in a priced day taken whole."""
    # The first instant of each local day (migration 0023): its bounds in money_1d.
    day_start = "public.local_midnight(e.local_day, e.timezone)"
    hour_columns = COLUMNS.replace(
        "day_start, day_end",
        f"{day_start} AS day_start, public.local_midnight(local_day + 1, timezone) AS day_end",
    )
    return f"""(
    SELECT {COLUMNS} FROM money_1d WHERE {nodes} AND {span.days}
    UNION ALL
    SELECT h.* FROM (
        SELECT least(
            (SELECT priced_until FROM money_1d_state) - {DAY_MARGIN},
            (SELECT min(since) FROM money_1d_pending WHERE {nodes}),
            {span.end} - {DAY_MARGIN}
        ) AS cut
    ) c
    CROSS JOIN LATERAL (
        VALUES ({span.start}, least({span.start} + {DAY_MARGIN}, c.cut)),
            (c.cut, 'infinity'::timestamptz)
    ) r (first_hour, past_hour)
    CROSS JOIN LATERAL (
        SELECT {hour_columns} FROM energy_1h e
        WHERE {nodes} AND {span.hours} AND e.{BUCKET.column} >= r.first_hour
            AND e.{BUCKET.column} < r.past_hour
            AND NOT EXISTS (
                -- The day's row(s) by the index's (node_id, day_start, tenant_id); the
                -- span's day condition names d's columns (the innermost relation).
                SELECT FROM money_1d d WHERE d.node_id = e.node_id
                    AND d.day_start = {day_start} AND d.tenant_id = e.tenant_id
                    AND d.local_day = e.local_day AND {span.days}
            )
        OFFSET 0
    ) h
) e"""


def per_currency(amount: str, source: str, where: str | None = None) -> str:
    """An amount summed per currency over `source`'s rows (energy_1h or priced_energy's)
    matching `where`."""
    return f"""
    SELECT {CURRENCY} AS currency, coalesce(sum({amount}), 0) AS amount
    FROM {source}{f" WHERE {where}" if where else ""} GROUP BY 1 ORDER BY 1
    """


def money_stat(title: str, amount: str, source: str, where: str | None = None) -> stat.Panel:
    """A stat of an amount per currency (one value a currency) over `source`'s rows
    matching `where`."""
    return sql_stat(title, per_currency(amount, source, where), decimals=2, per_row=True)


# The savings dashboard's rows: the sites picked, over the time range.
IN_RANGE = priced_energy(PICKED, NODE_FILTER_MANY)


def _total(column: str) -> str:
    return f"SELECT coalesce(sum({column}), 0) AS value FROM {IN_RANGE}"


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
                FROM {IN_RANGE} GROUP BY 1 ORDER BY 1
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
            # A range of no time (from == to): no value, rather than a failed query.
            sql_stat(
                "Data coverage",
                f"""
                SELECT 100 * coalesce(sum(covered_s), 0) / nullif({SELECTED_NODES}
                    * extract(epoch FROM $__timeTo()::timestamptz - $__timeFrom()::timestamptz),
                    0) AS "coverage %"
                FROM {IN_RANGE}
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
                    FROM {IN_RANGE}
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
                    FROM {IN_RANGE}
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
                          FROM {IN_RANGE}) d
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
                    FROM {IN_RANGE}
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
                    FROM {IN_RANGE}
                    GROUP BY 1, 2 ORDER BY 1, 2
                    """
                )
            )
            .height(8)
            .span(24)
        )
    )
