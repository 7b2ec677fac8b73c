"""Local days where midnight comes twice (clocks go back at midnight: Atlantic/Azores on
25 October 2026, America/Havana on 1 November 2026) start at their first midnight in
money_1d (migration 0023), and the money panels read the same as from energy_1h alone for
ranges starting at either midnight or between them. Upgrading prices again the days 0021
bounded at the second midnight; downgrading prices them again with 0021's bounds."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.grafana.test_dashboards import ADMIN_ROLE, load, sql_targets
from tests.grafana.test_money_days import REFRESH_JOB, _run_all_as, _same
from tests.support.aggregates import AGGREGATES_BEFORE_0026, materialize
from tests.support.fleet import create_node, create_tenant
from tests.support.grafana_sql import render
from tests.support.services import downgrade, empty_database, migrate
from tests.support.tariffs import flat_tariff, insert_samples, insert_tariff, sample_row
from tests.support.tenants import create_tenant_role

pytestmark = pytest.mark.integration

STEP = timedelta(minutes=15)
START, END = datetime(2026, 10, 21, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC)
# The first hour of the local day its own period, so an hour taken twice shows in money too.
FIRST_HOUR = {"name": "first hour", "from_hour": 0, "to_hour": 1, "price": 0.95}
UTC_HOUR = timedelta(hours=1)
# Each site's day with two midnights: its first, in UTC.
TWICE = {
    "azores": (date(2026, 10, 25), datetime(2026, 10, 25, 0, tzinfo=UTC)),
    "havana": (date(2026, 11, 1), datetime(2026, 11, 1, 4, tzinfo=UTC)),
}


def _samples(node: str, tenant: int, phase: int) -> list[Any]:
    rows, ts, seq = [], START, 0
    while ts < END:
        hour = ts.hour + ts.minute / 60 + phase
        pv = max(0.0, 4000 * math.sin(math.pi * (hour % 24 - 6) / 12))
        load_w = 700 + 400 * math.sin(hour / 3)
        rows.append(
            sample_row(ts, node, tenant, seq, soc=50.0, battery_w=0.0, pv_w=pv,
                       grid_w=load_w - pv, load_w=load_w, interval_s=STEP.total_seconds(),
                       covered_s=STEP.total_seconds())
        )  # fmt: skip
        ts, seq = ts + STEP, seq + 1
    return rows


def _run_job(db: Any) -> None:
    with db.connect() as conn:
        [(job,)] = conn.execute(REFRESH_JOB).fetchall()
        conn.execute("CALL run_job(%s)", (job,))


def _bounds(db: Any, node: str, day: date) -> set[tuple[datetime, datetime]]:
    with db.connect() as conn:
        return set(
            conn.execute(
                "SELECT day_start, day_end FROM money_1d WHERE node_id = %s AND local_day = %s",
                (node, day),
            ).fetchall()
        )


def _pending(db: Any) -> set[str]:
    with db.connect() as conn:
        return {n for (n,) in conn.execute("SELECT node_id FROM money_1d_pending").fetchall()}


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, Any]]:
    with empty_database("money_midnight") as db:
        migrate(db, "0022")
        tenant = create_tenant(db)
        sites = {
            name: create_node(db, tenant, f"mm-{tenant}-{name}") for name in (*TWICE, "lisbon")
        }
        with db.connect() as conn:
            conn.execute("UPDATE tenants SET timezone = 'Atlantic/Azores' WHERE id = %s", (tenant,))
            for name, zone in (("havana", "America/Havana"), ("lisbon", "Europe/Lisbon")):
                conn.execute("UPDATE nodes SET timezone = %s WHERE id = %s", (zone, sites[name]))
            insert_tariff(
                conn, tenant, flat_tariff(date(2026, 1, 1), 0.6, 0.15, periods=[FIRST_HOUR])
            )
            rows = []
            for phase, node in enumerate(sites.values()):
                rows += _samples(node, tenant, phase)
            insert_samples(conn, rows, fixed_point=False)  # at 0022
            conn.execute(f"ALTER ROLE {ADMIN_ROLE} LOGIN PASSWORD 'grafana-admin-test'")
        materialize(db, START, END, AGGREGATES_BEFORE_0026)
        role = f"mm_{tenant}"
        create_tenant_role(db, tenant, role)
        yield {"db": db, "sites": sites, "roles": (role, ADMIN_ROLE)}


def test_upgrade_prices_again_the_days_bounded_at_their_second_midnight(fleet):
    db, sites = fleet["db"], fleet["sites"]
    _run_job(db)  # as 0021 priced them
    migrate(db)
    assert _pending(db) == {sites[name] for name in TWICE}
    _run_job(db)
    assert not _pending(db)
    for name, (day, first) in TWICE.items():
        # 25 hours, from the first midnight; the day before ends there.
        assert _bounds(db, sites[name], day) == {(first, first + 25 * UTC_HOUR)}
        assert _bounds(db, sites[name], day - timedelta(days=1)) == {(first - 24 * UTC_HOUR, first)}


def _ranges(first: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Ranges starting at the midnights from `first`, between them, and an hour before;
    and ending there."""
    for start in (first - UTC_HOUR, first, first + UTC_HOUR / 2, first + UTC_HOUR):
        yield start, start + timedelta(days=3) - timedelta(seconds=1)
        yield start - timedelta(days=3), start - timedelta(seconds=1)


def test_money_panels_match_energy_1h_across_two_midnights(fleet):
    db, sites = fleet["db"], fleet["sites"]
    _run_job(db)
    panels = [
        (f"{title} {start}..{end} {nodes}", render(sql, start, end, {"node": nodes}))
        for title, sql in sql_targets(load("wattfleet-savings"))
        if title != "node"
        # Each site's own ranges, alone and with the others (on the other's days it has
        # one midnight, as every site's other days).
        for name, (_, first) in TWICE.items()
        for start, end in _ranges(first)
        for nodes in ([sites[name]], sorted(sites.values()))
    ]
    queries = [query for _, query in panels]
    differ, with_rows = [], 0
    for role in fleet["roles"]:
        found = _run_all_as(db, role, queries, reference=False)
        references = _run_all_as(db, role, queries, reference=True)
        for (what, _), rows, reference in zip(panels, found, references, strict=True):
            with_rows += bool(reference)
            if not _same(rows, reference):
                differ.append(f"{what} {role}:\n {rows}\n != {reference}")
    assert not differ, "\n".join(differ)
    assert with_rows > 500


def test_downgrade_prices_them_again_with_0021s_bounds(fleet):
    db, sites = fleet["db"], fleet["sites"]
    _run_job(db)
    downgrade(db, "0022")
    assert _pending(db) == {sites[name] for name in TWICE}
    _run_job(db)
    day, first = TWICE["azores"]
    assert _bounds(db, sites["azores"], day) == {(first + UTC_HOUR, first + 25 * UTC_HOUR)}
    migrate(db)
    assert _pending(db) == {sites[name] for name in TWICE}
