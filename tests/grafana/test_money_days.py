"""Money panels reading local days priced once (`money_1d`, migration 0021) return what
summing energy_1h's hours alone returns, at every step of a fleet's life.

A fleet over the last weeks: Warsaw sites across the 25-hour day of 25 October 2026, one
with a gap, one with its own tariff, one in Kolkata (a half-hour offset), one moved to
another tenant (in New York, whose 25-hour day is 1 November), and a price change. The
reference for each panel is its own SQL with `money_1d` emptied and never priced (in a
rolled-back transaction): then it reads every hour from energy_1h, as before the table
existed. Each panel is compared with it as each tenant's role and as the admin's, for
several time ranges, before the job runs, after it, and after a backdated tariff, a time
zone change, a move and a deleted version (before and after the job runs again).
tests/grafana/test_money_figures.py checks the figures themselves against the samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from contract.fields import CONTINUOUS_AGGREGATES
from tests.grafana.test_dashboards import ADMIN_ROLE, load, sql_targets
from tests.support.aggregates import materialize
from tests.support.fleet import create_node, create_tenant
from tests.support.grafana_sql import render
from tests.support.services import Database, empty_database, migrate
from tests.support.tariffs import flat_tariff, insert_samples, insert_tariff, sample_row
from tests.support.tenants import create_tenant_role

pytestmark = pytest.mark.integration

STEP = timedelta(minutes=10)
START = datetime(2026, 10, 20, tzinfo=UTC)
MOVED_AT = datetime(2026, 11, 10, tzinfo=UTC)
# No samples on the first site from 10:00 to 14:00 UTC on 26 October; the meter counted
# some energy meanwhile.
GAP = (datetime(2026, 10, 26, 10, tzinfo=UTC), datetime(2026, 10, 26, 14, tzinfo=UTC))
PEAK = {"name": "peak", "from_hour": 17, "to_hour": 21, "price": 0.95}
# What the money panels are (every panel of the savings dashboard; the rest by title).
PANELS = {
    "wattfleet-site": ("Savings today", "Net grid cost today", "Savings this month"),
    "wattfleet-sites": ("Sites",),
    "wattfleet-fleet": (
        "Fleet savings today (each site's local day)",
        "Fleet savings this month",
    ),
}
REFRESH_JOB = "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'refresh_money_1d'"


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _ranges() -> list[tuple[datetime, datetime]]:
    """Whole Warsaw days (the 25-hour one and the gap among them) as Grafana asks for
    them; a range starting at an odd minute and ending on a whole hour, across the price
    change, the own tariff, New York's 25-hour day and the move; the last 3 days (today's
    hours not priced yet). Each costs each panel's query at every step: few and short."""
    now = _now()
    return [
        (datetime(2026, 10, 23, 22, tzinfo=UTC), datetime(2026, 10, 26, 22, 59, 59, tzinfo=UTC)),
        (datetime(2026, 10, 27, 7, 13, tzinfo=UTC), datetime(2026, 11, 11, 16, tzinfo=UTC)),
        (now - timedelta(days=3), now),
    ]


def _samples(node: str, tenant: int, start: datetime, end: datetime, phase: float) -> list[Any]:
    rows, ts, seq = [], start, int(start.timestamp())
    step = STEP.total_seconds()
    while ts < end:
        if node.endswith("gap") and GAP[0] <= ts < GAP[1]:
            ts += STEP
            continue
        after_gap = node.endswith("gap") and ts == GAP[1]
        hour = ts.hour + ts.minute / 60 + phase
        pv = max(0.0, 4000 * math.sin(math.pi * (hour % 24 - 6) / 12))
        load_w = 700 + 400 * math.sin(hour / 3)
        battery = 800.0 if 18 <= hour % 24 < 22 else -600.0 if 11 <= hour % 24 < 14 else 0.0
        rows.append(
            sample_row(
                ts,
                node,
                tenant,
                seq,
                soc=50.0,
                battery_w=battery,
                pv_w=pv,
                grid_w=load_w - pv - battery,
                load_w=load_w,
                interval_s=step,
                covered_s=0.0 if after_gap else step,
                gap=(1500.0, 200.0, 900.0) if after_gap else (None, None, None),
            )
        )
        ts, seq = ts + STEP, seq + 1
    return rows


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, Any]]:
    with empty_database("money_days") as db:
        migrate(db)
        warsaw, new_york = create_tenant(db), create_tenant(db)
        sites = {
            "plain": create_node(db, warsaw, f"md-{warsaw}-plain"),
            "gap": create_node(db, warsaw, f"md-{warsaw}-gap"),
            "own": create_node(db, warsaw, f"md-{warsaw}-own"),
            "kolkata": create_node(db, warsaw, f"md-{warsaw}-kolkata"),
            "moved": create_node(db, warsaw, f"md-{warsaw}-moved"),
            "ny": create_node(db, new_york, f"md-{new_york}-ny"),
        }
        end = _now() - timedelta(minutes=2)
        with db.connect() as conn:
            conn.execute("UPDATE tenants SET timezone = 'Europe/Warsaw' WHERE id = %s", (warsaw,))
            conn.execute(
                "UPDATE tenants SET timezone = 'America/New_York' WHERE id = %s", (new_york,)
            )
            conn.execute(
                "UPDATE nodes SET timezone = 'Asia/Kolkata' WHERE id = %s", (sites["kolkata"],)
            )
            for valid_from, price in ((date(2026, 1, 1), 0.60), (date(2026, 10, 28), 0.70)):
                insert_tariff(conn, warsaw, flat_tariff(valid_from, price, 0.15, periods=[PEAK]))
            insert_tariff(
                conn,
                warsaw,
                flat_tariff(date(2026, 10, 30), 0.50, 0.25, currency="EUR"),
                sites["own"],
            )
            insert_tariff(conn, new_york, flat_tariff(date(2026, 1, 1), 0.20, 0.05, currency="USD"))
            rows = []
            for phase, (name, node) in enumerate(sites.items()):
                tenant = new_york if name == "ny" else warsaw
                if name == "moved":
                    rows += _samples(node, warsaw, START, MOVED_AT, phase)
                    rows += _samples(node, new_york, MOVED_AT, end, phase)
                else:
                    rows += _samples(node, tenant, START, end, phase)
            insert_samples(conn, rows)
            conn.execute(
                "UPDATE nodes SET tenant_id = %s WHERE id = %s", (new_york, sites["moved"])
            )
            conn.execute(f"ALTER ROLE {ADMIN_ROLE} LOGIN PASSWORD 'grafana-admin-test'")
        materialize(db, START, end - timedelta(hours=1))
        roles = {}
        for name, tenant in (("warsaw", warsaw), ("new_york", new_york)):
            role = f"md_{name}_{tenant}"
            create_tenant_role(db, tenant, role)
            roles[name] = role
        roles["admin"] = ADMIN_ROLE
        yield {"db": db, "sites": sites, "tenants": (warsaw, new_york), "roles": roles}


SITES_COVERAGE = 9


def _run_as(db: Database, role: str, sql: str, reference: bool) -> list[Any]:
    """The rows `sql` returns as `role` (its search_path too); `reference`: with money_1d
    empty and never priced, in a transaction rolled back."""
    [rows] = _run_all_as(db, role, [sql], reference)
    return rows


def _run_all_as(
    db: Database, role: str, queries: Sequence[str], reference: bool
) -> list[list[Any]]:
    """The rows each of `queries` returns, as `_run_as`, all in one transaction: a
    connection, and emptying money_1d, per query made most of a panel's time."""
    with db.connect() as conn, conn.transaction(force_rollback=True):
        if reference:
            conn.execute("DELETE FROM money_1d")
            conn.execute("DELETE FROM money_1d_pending")
            conn.execute("UPDATE money_1d_state SET priced_until = '-infinity'")
        settings = conn.execute(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s"
            " JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s",
            (role,),
        ).fetchall()
        conn.execute(f'SET LOCAL ROLE "{role}"')
        for (setting,) in settings:
            name, _, value = setting.partition("=")
            conn.execute(f"SELECT set_config('{name}', %s, true)", (value,))
        return [conn.execute(sql).fetchall() for sql in queries]


def _same(rows: list[Any], reference: list[Any]) -> bool:
    if len(rows) != len(reference):
        return False
    for row, ref in zip(rows, reference, strict=True):
        for value, expected in zip(row, ref, strict=True):
            if isinstance(expected, float) and isinstance(value, float):
                # The same sums in another order.
                if value != pytest.approx(expected, rel=1e-9, abs=1e-9):
                    return False
            elif value != expected:
                return False
    return True


def _queries(fleet: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(what, role, SQL) of every money panel, per role (and range, for the savings
    dashboard's; the others show today and this month)."""
    with fleet["db"].connect() as conn:
        current = dict(conn.execute("SELECT id, tenant_id FROM nodes").fetchall())
    ranges = _ranges()
    for who, role in fleet["roles"].items():
        tenant = None if who == "admin" else fleet["tenants"][who != "warsaw"]
        mine = sorted(n for n in fleet["sites"].values() if tenant in (None, current[n]))
        for title, sql in sql_targets(load("wattfleet-savings")):
            if title != "node":
                for start, end in ranges:
                    what = f"{title} / {who} / {start:%m-%d %H:%M}..{end:%m-%d %H:%M}"
                    yield what, role, render(sql, start, end, {"node": mine})
        for uid, titles in PANELS.items():
            if uid == "wattfleet-fleet" and who != "admin":
                continue
            for title, sql in sql_targets(load(uid)):
                for node in mine if uid == "wattfleet-site" and title in titles else []:
                    yield (
                        f"{title} / {who} / {node}",
                        role,
                        render(sql, *ranges[-1], {"node": node}),
                    )
                if uid != "wattfleet-site" and title in titles:
                    yield f"{title} / {who}", role, render(sql, *ranges[-1])


def _without_coverage(rows: list[Any]) -> list[Any]:
    """The Sites table's rows without its "coverage today %" (the 10th column)."""
    return [(*row[:SITES_COVERAGE], *row[SITES_COVERAGE + 1 :]) for row in rows]


def _check_every_panel(fleet: dict[str, Any]) -> int:
    """Compares every money panel with its reference; returns how many had rows."""
    db, differ, with_rows = fleet["db"], [], 0
    by_role: dict[str, list[tuple[str, str]]] = {}
    for what, role, sql in _queries(fleet):
        by_role.setdefault(role, []).append((what, sql))
    for role, panels in by_role.items():
        queries = [sql for _, sql in panels]
        found = _run_all_as(db, role, queries, reference=False)
        references = _run_all_as(db, role, queries, reference=True)
        for (what, _), rows, reference in zip(panels, found, references, strict=True):
            if what.startswith("Sites /"):
                # "coverage today %" divides by the time since midnight: now() moved between.
                rows, reference = _without_coverage(rows), _without_coverage(reference)
            if not _same(rows, reference):
                differ.append(f"{what}:\n  {rows}\n  != {reference}")
            with_rows += bool(reference)
    assert not differ, "\n".join(differ)
    return with_rows


def _run_job(db: Database) -> None:
    with db.connect() as conn:
        [(job,)] = conn.execute(REFRESH_JOB).fetchall()
        conn.execute("CALL run_job(%s)", (job,))


def _priced(db: Database) -> list[Any]:
    with db.connect() as conn:
        rows: list[Any] = conn.execute(
            "SELECT * FROM money_1d ORDER BY node_id, tenant_id, day_start, currency, period"
        ).fetchall()
        return rows


def _pending(db: Database) -> dict[str, datetime]:
    with db.connect() as conn:
        return dict(conn.execute("SELECT node_id, since FROM money_1d_pending").fetchall())


def test_money_panels_match_energy_1h_through_every_change(fleet):
    db, sites = fleet["db"], fleet["sites"]
    warsaw, new_york = fleet["tenants"]
    assert _check_every_panel(fleet) > 100  # nothing priced yet: all from energy_1h

    _run_job(db)
    priced = _priced(db)
    # Every site's complete local days (all but the one still going, or two), per
    # tariff period and currency; none after where the job stopped.
    days = {(r[0], r[2]) for r in priced}
    assert len(days) > 6 * 35
    assert not _pending(db)
    _check_every_panel(fleet)

    _run_job(db)
    assert _same(_priced(db), priced), "a second run changes nothing (but summing order)"

    # A backdated tenant tariff: its sites' days from the day before it are gone at once
    # and priced again by the next run.
    with db.connect() as conn:
        insert_tariff(conn, warsaw, flat_tariff(date(2026, 10, 24), 0.65, 0.12, periods=[PEAK]))
    pending = _pending(db)
    assert set(pending) == {sites[s] for s in ("plain", "gap", "own", "kolkata")}
    # From the start of each site's local day before it.
    assert datetime(2026, 10, 22, 18, tzinfo=UTC) <= min(pending.values())
    assert min(pending.values()) <= datetime(2026, 10, 23, tzinfo=UTC)
    _check_every_panel(fleet)
    _run_job(db)
    assert not _pending(db)
    _check_every_panel(fleet)

    # A site's zone, a tenant's zone, a move, a deleted version: each at once, then priced.
    # Checked together: each leaves days in the ranges that only it invalidates (the own
    # site's before the 27th, the New York site's, the moved one's before the 27th).
    with db.connect() as conn:
        conn.execute("UPDATE nodes SET timezone = 'Europe/Lisbon' WHERE id = %s", (sites["own"],))
        conn.execute("UPDATE tenants SET timezone = 'America/Chicago' WHERE id = %s", (new_york,))
    with db.connect() as conn:
        conn.execute("UPDATE nodes SET tenant_id = %s WHERE id = %s", (new_york, sites["plain"]))
        conn.execute(
            "DELETE FROM tariffs WHERE tenant_id = %s AND valid_from = '2026-10-28'", (warsaw,)
        )
    _check_every_panel(fleet)
    _run_job(db)
    _check_every_panel(fleet)

    # A site created with an id that already has history (telemetry is kept by id).
    late, first = f"md-{warsaw}-late", datetime(2026, 11, 2, tzinfo=UTC)
    with db.connect() as conn:
        insert_samples(conn, _samples(late, warsaw, first, first + timedelta(days=3), 7))
    materialize(db, first, first + timedelta(days=3))
    sites["late"] = create_node(db, warsaw, late)
    assert _pending(db) == {late: first}  # from its first hour
    _check_every_panel(fleet)
    _run_job(db)
    _check_every_panel(fleet)


def test_a_tenant_reads_only_its_own_priced_days(fleet):
    db = fleet["db"]
    _run_job(db)
    for who, tenant in zip(("warsaw", "new_york"), fleet["tenants"], strict=True):
        role = fleet["roles"][who]
        for table in ("money_1d", "money_1d_pending"):
            seen = _run_as(db, role, f"SELECT DISTINCT tenant_id FROM {table}", False)
            assert set(seen) <= {(tenant,)}, (who, table)
        assert _run_as(db, role, "SELECT count(*) FROM money_1d", False)[0][0] > 0
        # The base table itself is denied to the role.
        with pytest.raises(Exception, match="permission denied"):
            _run_as(db, role, "SELECT count(*) FROM public.money_1d", False)


def test_hours_materialized_late_are_priced_again_once_invalidated(fleet):
    """A backfill older than the job's 10 days, materialized by hand: the job leaves its
    days as priced (docs/runbook.md says so); invalidating them from the window's start,
    as the runbook says, prices them again."""
    db, node = fleet["db"], fleet["sites"]["gap"]
    warsaw, _ = fleet["tenants"]
    late = datetime(2026, 11, 5, 12, 7, tzinfo=UTC)
    [savings] = [
        sql for title, sql in sql_targets(load("wattfleet-savings")) if title == "Grid import"
    ]
    query = render(savings, late - timedelta(days=5), late + timedelta(days=5), {"node": [node]})
    _run_job(db)
    with db.connect() as conn:
        row = sample_row(late, node, warsaw, 10**9, soc=50.0, battery_w=0.0, pv_w=0.0,
                         grid_w=6000.0, load_w=6000.0, interval_s=600, covered_s=600)  # fmt: skip
        insert_samples(conn, [row])
    window = (late.replace(minute=0), late.replace(minute=0) + timedelta(hours=1))
    materialize(db, *window, CONTINUOUS_AGGREGATES[:2])
    _run_job(db)
    truth = _run_as(db, ADMIN_ROLE, query, reference=True)
    assert not _same(_run_as(db, ADMIN_ROLE, query, reference=False), truth)
    with db.connect() as conn:
        conn.execute("SELECT invalidate_money_days(ARRAY(SELECT id FROM nodes), %s)", (window[0],))
    assert _same(_run_as(db, ADMIN_ROLE, query, reference=False), truth)
    _run_job(db)
    assert not _pending(db)
    assert _same(_run_as(db, ADMIN_ROLE, query, reference=False), truth)


def test_hours_materialized_while_the_job_was_stopped_are_priced_again(fleet):
    """The job stopped for five days (failing, say) while the hourly aggregate's policy
    materialized late samples of a day 12 days back, within its 9-day window then: the
    next run prices again the 10 days before where the last one stopped too."""
    db, node = fleet["db"], fleet["sites"]["kolkata"]
    warsaw, _ = fleet["tenants"]
    _run_job(db)
    stopped = _now().replace(minute=0, second=0) - timedelta(days=5)
    with db.connect() as conn:
        # As the run five days ago left them.
        conn.execute("UPDATE money_1d_state SET priced_until = %s", (stopped,))
        conn.execute("DELETE FROM money_1d WHERE day_end > %s", (stopped,))
        late = (_now() - timedelta(days=12)).replace(minute=7, second=0)
        row = sample_row(late, node, warsaw, 2 * 10**9, soc=50.0, battery_w=0.0, pv_w=0.0,
                         grid_w=6000.0, load_w=6000.0, interval_s=600, covered_s=600)  # fmt: skip
        insert_samples(conn, [row])
    hour = late.replace(minute=0)
    materialize(db, hour, hour + timedelta(hours=1), CONTINUOUS_AGGREGATES[:2])
    _run_job(db)
    [grid_import] = [
        sql for title, sql in sql_targets(load("wattfleet-savings")) if title == "Grid import"
    ]
    query = render(
        grid_import, late - timedelta(days=4), late + timedelta(days=4), {"node": [node]}
    )
    rows = _run_as(db, ADMIN_ROLE, query, reference=False)
    assert _same(rows, _run_as(db, ADMIN_ROLE, query, reference=True))
