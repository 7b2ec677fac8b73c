"""The proof of the money figures (issue 15): days of samples for a site in
Europe/Warsaw, across both DST changes (a 23- and a 25-hour day), with a gap, export
paid less than import and a tariff change at local midnight. The expected kWh, coverage
and money per local day are computed here, from the samples and the tariff's own terms,
and every savings panel's SQL, rendered as Grafana renders it for those local days, must
return them: as the tenant's role and as the admin organization's.

Future days, in a database of their own: no retention or compression policy touches
them, and materializing them moves no other test's refresh watermark. The figures are
checked twice: computed live by real-time aggregation, and again once materialized.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

import pytest

from tests.grafana.test_dashboards import ADMIN_ROLE, load, panel_sql
from tests.support.aggregates import materialize
from tests.support.fleet import create_node, create_tenant
from tests.support.grafana_sql import render
from tests.support.services import Database, empty_database, migrate
from tests.support.tariffs import (
    flat_tariff,
    insert_samples,
    insert_tariff,
    sample_row,
    set_time_zone,
)
from tests.support.tenants import as_role, create_tenant_role

pytestmark = pytest.mark.integration

WARSAW = ZoneInfo("Europe/Warsaw")
# 28 March 2027 has 23 hours in Warsaw, 31 October 2027 has 25.
DAYS = (date(2027, 3, 27), date(2027, 3, 28), date(2027, 10, 31))
# The price changes at local midnight starting 28 March.
CHANGE = date(2027, 3, 28)
# (import off-peak, import peak 17:00-21:00 every day, export) per version.
PRICES = {date(2027, 3, 1): (0.60, 0.90, 0.20), CHANGE: (0.70, 1.10, 0.15)}
PEAK_HOURS = range(17, 21)
GAP_KEYS = ("gap_pv", "gap_import", "gap_export")
# No samples from 10:00 to 11:30 local on the 28th; the first one after covers nothing.
GAP = (datetime(2027, 3, 28, 10, 0, tzinfo=WARSAW), datetime(2027, 3, 28, 11, 30, tzinfo=WARSAW))
STEP = timedelta(minutes=1)
# PV, import, export Wh the meters counted over the gap: real, but not priced.
GAP_METERED = (4200.0, 300.0, 1800.0)


def _local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=WARSAW).astimezone(UTC)


class Powers(TypedDict):
    pv_w: float
    load_w: float
    battery_w: float
    grid_w: float


def _powers(local: datetime) -> Powers:
    """A spring day: PV over the middle of the day, an evening peak of use, the battery
    charging at noon and discharging in the evening; the grid balances (+ import)."""
    hour = local.hour + local.minute / 60
    pv = max(0.0, 5000 * math.sin(math.pi * (hour - 6) / 13)) if 6 < hour < 19 else 0.0
    load = 600 + (1800 if 17 <= hour < 21 else 0) + 300 * math.sin(hour)
    battery = -1500.0 if 10 <= hour < 14 else 1200.0 if 17 <= hour < 21 else 0.0
    return {"pv_w": pv, "load_w": load, "battery_w": battery, "grid_w": load - pv - battery}


def _samples(node: str, tenant: int) -> list[tuple[Any, ...]]:
    rows = []
    seq = 0
    for day in DAYS:
        ts, end = _local_midnight(day), _local_midnight(day + timedelta(days=1))
        previous = None
        while ts < end:
            if not GAP[0] <= ts < GAP[1]:
                interval = 0.0 if previous is None else (ts - previous).total_seconds()
                covered = interval if interval <= 3 * STEP.total_seconds() else 0.0
                # What the meter counted meanwhile comes with the first sample after it.
                gap = GAP_METERED if previous is not None and not covered else (None,) * 3
                local = ts.astimezone(WARSAW)
                rows.append(
                    sample_row(
                        ts,
                        node,
                        tenant,
                        seq,
                        soc=50.0,
                        interval_s=interval,
                        covered_s=covered,
                        gap=gap,
                        **_powers(local),
                    )
                )
                previous = ts
                seq += 1
            ts += STEP
    return rows


def _version_prices(day: date) -> tuple[float, float, float]:
    return PRICES[max(d for d in PRICES if d <= day)]


def _expected(rows: list[tuple[Any, ...]]) -> dict[date, dict[str, Any]]:
    """Per local day, from the samples alone: each sample's energy at the price of its
    local hour in the tariff version of its local day."""
    days: dict[date, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        ts, covered = row[0], row[12]
        pv, imported, exported, load = (wh / 1000 for wh in row[13:17])
        local = ts.astimezone(WARSAW)
        off_peak, peak, export_price = _version_prices(local.date())
        period = "peak" if local.hour in PEAK_HOURS else "standard"
        import_price = peak if period == "peak" else off_peak
        d = days[local.date()]
        d["pv"] += pv
        d["import"] += imported
        d["export"] += exported
        d["load"] += load
        d["covered"] += covered
        for key, wh in zip(("gap_pv", "gap_import", "gap_export"), row[19:22], strict=True):
            d[key] += (wh or 0) / 1000
        d["import_cost"] += imported * import_price
        d["export_revenue"] += exported * export_price
        d["grid_only"] += load * import_price
        d[f"{period}_import"] += imported
        d[f"{period}_savings"] += load * import_price - (
            imported * import_price - exported * export_price
        )
    for d in days.values():
        d["net"] = d["import_cost"] - d["export_revenue"]
        d["savings"] = d["grid_only"] - d["net"]
    return days


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Any]]:
    with empty_database("money") as db:
        migrate(db)
        tenant = create_tenant(db)
        node = create_node(db, tenant)
        rows = _samples(node, tenant)
        with db.connect() as conn:
            set_time_zone(conn, tenant, "Europe/Warsaw")
            for valid_from, (off_peak, peak, export) in PRICES.items():
                peak_period = {
                    "name": "peak",
                    "from_hour": PEAK_HOURS.start,
                    "to_hour": PEAK_HOURS.stop,
                    "price": peak,
                }
                insert_tariff(
                    conn, tenant, flat_tariff(valid_from, off_peak, export, periods=[peak_period])
                )
            insert_samples(conn, rows)
            conn.execute(f"ALTER ROLE {ADMIN_ROLE} LOGIN PASSWORD 'grafana-admin-test'")
        role = f"money_{node.replace('-', '_')}"
        yield {
            "db": db,
            "node": node,
            "expected": _expected(rows),
            "roles": {
                "tenant": (role, create_tenant_role(db, tenant, role)),
                "admin": (ADMIN_ROLE, "grafana-admin-test"),
            },
        }


def _materialize(db: Database) -> None:
    materialize(db, _local_midnight(DAYS[0]), _local_midnight(DAYS[-1] + timedelta(days=2)))


def _query(site: dict[str, Any], who: str, title: str, first: date, last: date) -> list[Any]:
    """The panel's rows for local days first..last, as Grafana in Warsaw asks for them."""
    sql = panel_sql(load("wattfleet-savings"), title)
    time_from = _local_midnight(first)
    time_to = _local_midnight(last + timedelta(days=1)) - timedelta(seconds=1)
    rendered = render(sql, time_from, time_to, {"node": [site["node"]]})
    with as_role(site["db"], *site["roles"][who]) as conn:
        rows: list[Any] = conn.execute(rendered).fetchall()
        return rows


def _check_every_panel(site: dict[str, Any], who: str) -> None:
    expected = site["expected"]
    assert sorted(expected) == list(DAYS)
    for day in DAYS:
        e = expected[day]

        def one(title: str, d: date = day) -> Any:
            [row] = _query(site, who, title, d, d)
            return row

        assert one("Savings") == ("PLN", pytest.approx(e["savings"], abs=1e-6)), day
        assert one("Net grid cost (import - export)") == ("PLN", pytest.approx(e["net"])), day
        assert one("Grid-only cost") == ("PLN", pytest.approx(e["grid_only"])), day
        assert one("Saved vs grid-only") == (
            "PLN",
            pytest.approx(100 * e["savings"] / e["grid_only"]),
        )
        assert one("PV energy") == (pytest.approx(e["pv"]),), day
        assert one("Grid import") == (pytest.approx(e["import"]),), day
        assert one("Grid export") == (pytest.approx(e["export"]),), day
        assert one("Grid import in gaps (meter, unpriced)") == (pytest.approx(e["gap_import"]),)
        # The picker's range ends a second before midnight, as Grafana's does.
        seconds = (_local_midnight(day + timedelta(days=1)) - _local_midnight(day)).total_seconds()
        assert one("Data coverage") == (pytest.approx(100 * e["covered"] / (seconds - 1)),), day
        by_period = {row[0]: row for row in _query(site, who, "By tariff period", day, day)}
        for period in ("peak", "standard"):
            row = by_period[period]
            assert row[1] == "PLN"
            assert row[2] == pytest.approx(e[f"{period}_import"]), (day, period)
            assert row[9] == pytest.approx(e[f"{period}_savings"]), (day, period)

    # Days as rows: the spring days side by side, one 23 hours long.
    spring = DAYS[:2]
    energy = _query(site, who, "Energy per day", *spring)
    assert [r[0] for r in energy] == [d.isoformat() for d in spring]
    for row, day in zip(energy, spring, strict=True):
        e = expected[day]
        assert row[1:5] == pytest.approx((e["pv"], e["import"], e["export"], e["load"]))
    money = _query(site, who, "Money per day", *spring)
    assert [r[0] for r in money] == [f"{d.isoformat()} PLN" for d in spring]
    for row, day in zip(money, spring, strict=True):
        e = expected[day]
        expected_money = (e["import_cost"], e["export_revenue"], e["grid_only"], e["savings"])
        assert row[1:] == pytest.approx(expected_money)
    coverage = _query(site, who, "Data coverage per day", *spring)
    assert coverage[0][1] == pytest.approx(100.0 * expected[spring[0]]["covered"] / 86400)
    # 23 hours, less the 90-minute gap, the minute of the first sample after it (it
    # covers nothing) and that of the first sample of the day (nothing came before it).
    assert coverage[1][1] == pytest.approx(100.0 * expected[spring[1]]["covered"] / (23 * 3600))
    assert coverage[1][1] == pytest.approx(100.0 * (23 * 60 - 92) / (23 * 60))
    [month] = _query(site, who, "Per month", *spring)
    assert month[:2] == ("2027-03", "PLN")
    # The gap's metered energy, apart: the same kWh, priced nowhere above.
    assert month[12:] == pytest.approx([expected[CHANGE][k] for k in GAP_KEYS])
    assert month[2:12] == pytest.approx(
        (
            sum(expected[d]["pv"] for d in spring),
            sum(expected[d]["import"] for d in spring),
            sum(expected[d]["export"] for d in spring),
            sum(expected[d]["load"] for d in spring),
            sum(expected[d]["import_cost"] for d in spring),
            sum(expected[d]["export_revenue"] for d in spring),
            sum(expected[d]["net"] for d in spring),
            sum(expected[d]["grid_only"] for d in spring),
            sum(expected[d]["savings"] for d in spring),
            100
            * sum(expected[d]["savings"] for d in spring)
            / sum(expected[d]["grid_only"] for d in spring),
        )
    )


@pytest.mark.parametrize("who", ["tenant", "admin"])
def test_every_savings_panel_matches_the_independent_figures(site, who):
    _check_every_panel(site, who)  # computed live: nothing is materialized yet
    _materialize(site["db"])
    _check_every_panel(site, who)


def test_the_figures_are_not_trivial(site):
    """Guards the proof itself: export, a cheaper export price, peak hours and the gap
    all weigh in the figures it compares."""
    day = site["expected"][CHANGE]
    assert day["export"] > 1
    assert day["peak_import"] > 0.5
    assert day["export_revenue"] < day["export"] * 0.70
    assert 0 < day["covered"] < 23 * 3600 - 90 * 60 + 1
    assert day["gap_import"] == GAP_METERED[1] / 1000


# -- Today and this month: the figures the Site, Sites and Fleet dashboards show ---------

TODAY_PRICES = (0.50, 0.80, 0.10)  # import off-peak, peak 17-21, export
TODAY_STEP = timedelta(minutes=5)


@pytest.fixture(scope="module")
def today_site() -> Iterator[dict[str, Any]]:
    """A Warsaw site with samples every 5 minutes from the start of this local month (at
    most 25 days back, inside every retention) until a minute ago, in a database of its
    own (nothing materialized: the figures come live, as during a day)."""
    now = datetime.now(UTC)
    local_now = now.astimezone(WARSAW)
    month_start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = max(month_start, local_now - timedelta(days=25)).astimezone(UTC)
    start = start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)
    with empty_database("money_today") as db:
        migrate(db)
        tenant = create_tenant(db)
        node = create_node(db, tenant)
        rows, ts, seq = [], start, 0
        while ts < now - timedelta(minutes=1):
            step = TODAY_STEP.total_seconds()
            rows.append(
                sample_row(
                    ts,
                    node,
                    tenant,
                    seq,
                    soc=50.0,
                    interval_s=step,
                    covered_s=step,
                    **_powers(ts.astimezone(WARSAW)),
                )
            )
            ts, seq = ts + TODAY_STEP, seq + 1
        off_peak, peak, export = TODAY_PRICES
        peak_period = {"name": "peak", "from_hour": 17, "to_hour": 21, "price": peak}
        with db.connect() as conn:
            set_time_zone(conn, tenant, "Europe/Warsaw")
            insert_tariff(
                conn, tenant, flat_tariff(date(2026, 1, 1), off_peak, export, periods=[peak_period])
            )
            insert_samples(conn, rows)
            conn.execute(f"ALTER ROLE {ADMIN_ROLE} LOGIN PASSWORD 'grafana-admin-test'")
        role = f"today_{node.replace('-', '_')}"
        yield {
            "db": db,
            "node": node,
            "rows": rows,
            "roles": {
                "tenant": (role, create_tenant_role(db, tenant, role)),
                "admin": (ADMIN_ROLE, "grafana-admin-test"),
            },
        }


def _today_and_month(rows: list[tuple[Any, ...]]) -> dict[str, float]:
    """Savings and net cost today and this month (local), from the samples."""
    today = datetime.now(WARSAW).date()
    off_peak, peak, export_price = TODAY_PRICES
    figures: dict[str, float] = defaultdict(float)
    for row in rows:
        local = row[0].astimezone(WARSAW)
        imported, exported, load = (wh / 1000 for wh in row[14:17])
        price = peak if local.hour in PEAK_HOURS else off_peak
        net = imported * price - exported * export_price
        savings = load * price - net
        if (local.year, local.month) == (today.year, today.month):
            figures["month_savings"] += savings
        if local.date() == today:
            figures["today_savings"] += savings
            figures["today_net"] += net
    return figures


@pytest.mark.parametrize("who", ["tenant", "admin"])
def test_today_and_this_month_panels_match_the_independent_figures(today_site, who):
    expected = _today_and_month(today_site["rows"])
    role, node = today_site["roles"][who], today_site["node"]
    now = datetime.now(UTC)

    def run(uid: str, title: str) -> list[Any]:
        sql = render(panel_sql(load(uid), title), now - timedelta(hours=24), now, {"node": node})
        with as_role(today_site["db"], *role) as conn:
            rows: list[Any] = conn.execute(sql).fetchall()
        return rows

    assert run("wattfleet-site", "Savings today") == [
        ("PLN", pytest.approx(expected["today_savings"]))
    ]
    assert run("wattfleet-site", "Net grid cost today") == [
        ("PLN", pytest.approx(expected["today_net"]))
    ]
    assert run("wattfleet-site", "Savings this month") == [
        ("PLN", pytest.approx(expected["month_savings"]))
    ]
    [site_row] = run("wattfleet-sites", "Sites")
    assert site_row[0] == node
    assert site_row[6:9] == (
        pytest.approx(expected["today_savings"]),
        pytest.approx(expected["month_savings"]),
        "PLN",
    )
    if who == "admin":
        fleet = "wattfleet-fleet"
        assert run(fleet, "Fleet savings today (each site's local day)") == [
            ("PLN", pytest.approx(expected["today_savings"]))
        ]
        assert run(fleet, "Fleet savings this month") == [
            ("PLN", pytest.approx(expected["month_savings"]))
        ]
