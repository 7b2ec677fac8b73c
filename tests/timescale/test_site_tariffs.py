"""Each site's time zone and tariff timeline, as the analytics read them (site_zones,
site_tariffs: migration 0013)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from contract.fields import CONTINUOUS_AGGREGATES
from tests.grafana.test_money_days import REFRESH_JOB
from tests.support.aggregates import AGGREGATES_BEFORE_0026, materialize
from tests.support.fleet import create_node, create_tenant
from tests.support.services import downgrade, empty_database, migrate
from tests.support.tariffs import (
    flat_tariff,
    insert_samples,
    insert_tariff,
    sample_row,
    set_time_zone,
)
from tests.support.tenants import as_role, create_tenant_role

pytestmark = pytest.mark.integration

WARSAW, NEW_YORK = ZoneInfo("Europe/Warsaw"), ZoneInfo("America/New_York")


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def test_a_site_uses_its_own_versions_from_the_first_and_its_tenants_before(database):
    tenant = create_tenant(database)
    own, plain, abroad = (create_node(database, tenant) for _ in range(3))
    a, b, c, d = date(2026, 1, 1), date(2026, 6, 1), date(2026, 4, 1), date(2026, 9, 1)
    with database.connect() as conn:
        set_time_zone(conn, tenant, "Europe/Warsaw")
        conn.execute("UPDATE nodes SET timezone = 'America/New_York' WHERE id = %s", (abroad,))
        for day, price in ((a, 0.5), (b, 0.6), (d, 0.8)):
            insert_tariff(conn, tenant, flat_tariff(day, price, 0.1))
        insert_tariff(conn, tenant, flat_tariff(c, 0.7, 0.2, currency="EUR"), node_id=own)
        timelines = {
            node: conn.execute(
                "SELECT valid_from, currency, import_prices[1], starts_at, ends_at"
                " FROM site_tariffs WHERE node_id = %s ORDER BY valid_from",
                (node,),
            ).fetchall()
            for node in (own, plain, abroad)
        }
        zones = dict(
            conn.execute(
                "SELECT node_id, timezone FROM site_zones WHERE node_id IN (%s, %s)",
                (plain, abroad),
            ).fetchall()
        )
    infinity = None  # in force until further notice
    # Its tenant's first version, then its own from 1 April on; the tenant's later
    # versions no longer apply to it.
    assert timelines[own] == [
        (a, "PLN", 0.5, _midnight(a, WARSAW), _midnight(c, WARSAW)),
        (c, "EUR", 0.7, _midnight(c, WARSAW), infinity),
    ]
    assert timelines[plain] == [
        (a, "PLN", 0.5, _midnight(a, WARSAW), _midnight(b, WARSAW)),
        (b, "PLN", 0.6, _midnight(b, WARSAW), _midnight(d, WARSAW)),
        (d, "PLN", 0.8, _midnight(d, WARSAW), infinity),
    ]
    # The same versions, from midnight where that site is.
    assert [row[3] for row in timelines[abroad]] == [_midnight(x, NEW_YORK) for x in (a, b, d)]
    assert zones == {plain: "Europe/Warsaw", abroad: "America/New_York"}


def test_a_version_from_a_day_whose_midnight_comes_twice_starts_at_the_first(database):
    """Atlantic/Azores goes back from UTC+0 to UTC-1 at 01:00 on 25 October 2026: midnight
    comes twice, at 00:00 and 01:00 UTC. A version valid from that day prices the day's
    first hour too (migration 0024), not the version before."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    before, day = date(2026, 10, 1), date(2026, 10, 25)
    first = datetime(2026, 10, 25, 0, tzinfo=UTC)  # the first midnight; the second an hour on
    with database.connect() as conn:
        set_time_zone(conn, tenant, "Atlantic/Azores")
        insert_tariff(conn, tenant, flat_tariff(before, 0.5, 0.1))
        insert_tariff(conn, tenant, flat_tariff(day, 0.9, 0.2))
        # A kWh imported in each 5 minutes from half an hour before the first midnight to
        # two hours after it.
        rows = [
            sample_row(
                first + timedelta(minutes=m), node, tenant, i, soc=50, battery_w=0, pv_w=0,
                grid_w=12000, load_w=12000, interval_s=300, covered_s=300,
            )
            for i, m in enumerate(range(-30, 120, 5))
        ]  # fmt: skip
        insert_samples(conn, rows)
        timeline = conn.execute(
            "SELECT valid_from, starts_at, ends_at FROM site_tariffs WHERE node_id = %s"
            " ORDER BY valid_from",
            (node,),
        ).fetchall()
    materialize(
        database,
        first - timedelta(hours=1),
        first + timedelta(hours=2),
        CONTINUOUS_AGGREGATES[:2],
    )
    with database.connect() as conn:
        hours = conn.execute(
            "SELECT bucket, local_day, import_price, import_cost FROM energy_1h"
            " WHERE node_id = %s ORDER BY bucket",
            (node,),
        ).fetchall()
        buckets = conn.execute(
            "SELECT bucket >= %s, local_day, import_price, count(*) FROM energy_5m"
            " WHERE node_id = %s GROUP BY 1, 2, 3 ORDER BY 1",
            (first, node),
        ).fetchall()

    october = _midnight(before, ZoneInfo("Atlantic/Azores"))
    assert timeline == [(before, october, first), (day, first, None)]
    assert [(h[0], h[1], h[2], round(h[3], 6)) for h in hours] == [
        (first - timedelta(hours=1), date(2026, 10, 24), 0.5, 3.0),
        (first, day, 0.9, 10.8),
        (first + timedelta(hours=1), day, 0.9, 10.8),
    ]
    assert buckets == [(False, date(2026, 10, 24), 0.5, 6), (True, day, 0.9, 24)]


def test_upgrade_prices_again_the_days_of_a_version_that_started_an_hour_late():
    """money_1d's days priced with 0013's bounds (the Azores version from 25 October at
    the second midnight) are priced again by 0024's upgrade, and by its downgrade."""
    with empty_database("tariff_midnight") as db:
        migrate(db, "0023")
        tenant = create_tenant(db)
        node = create_node(db, tenant)
        start = datetime(2026, 10, 23, tzinfo=UTC)
        with db.connect() as conn:
            set_time_zone(conn, tenant, "Atlantic/Azores")
            insert_tariff(conn, tenant, flat_tariff(date(2026, 10, 1), 0.5, 0.1))
            insert_tariff(conn, tenant, flat_tariff(date(2026, 10, 25), 0.9, 0.2))
            rows = [
                sample_row(
                    start + timedelta(hours=h), node, tenant, h, soc=50, battery_w=0, pv_w=0,
                    grid_w=1000, load_w=1000, interval_s=3600, covered_s=3600,
                )
                # Four days, and one hour a month on: the job's later runs price again
                # only the 10 days before it.
                for h in (*range(96), 30 * 24)
            ]  # fmt: skip
            insert_samples(conn, rows, fixed_point=False)
        materialize(db, start, start + timedelta(days=31), AGGREGATES_BEFORE_0026)

        def day_cost() -> list[tuple[object, ...]]:
            with db.connect() as conn:
                [(job,)] = conn.execute(REFRESH_JOB).fetchall()
                conn.execute("CALL run_job(%s)", (job,))
                return [
                    (round(cost, 6), pending)
                    for cost, pending in conn.execute(
                        "SELECT sum(import_cost), (SELECT count(*) FROM money_1d_pending)"
                        " FROM money_1d WHERE node_id = %s AND local_day = '2026-10-25'",
                        (node,),
                    ).fetchall()
                ]

        # 25 hours of a kWh: the first at the old version's price, then the new one's.
        assert day_cost() == [(0.5 + 24 * 0.9, 0)]
        migrate(db)
        assert day_cost() == [(25 * 0.9, 0)]
        downgrade(db, "0023")
        assert day_cost() == [(0.5 + 24 * 0.9, 0)]


def test_a_time_zone_the_database_does_not_know_is_refused(database):
    tenant = create_tenant(database)
    with database.connect() as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        set_time_zone(conn, tenant, "Europe/Atlantis")
    node = create_node(database, tenant)
    with database.connect() as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("UPDATE nodes SET timezone = 'Mars/Olympus' WHERE id = %s", (node,))


def test_history_from_before_a_site_moved_stays_its_old_tenants(database):
    """A site moved from tenant A to B: A's rows keep A's zone and get none of B's
    prices (no money rather than B's tariff), and A's role learns nothing of B's."""
    tenant_a, tenant_b = create_tenant(database), create_tenant(database)
    node = create_node(database, tenant_a)
    hour = datetime(2026, 11, 2, 9, 0, tzinfo=ZoneInfo("UTC"))
    with database.connect() as conn:
        set_time_zone(conn, tenant_a, "Europe/Warsaw")
        set_time_zone(conn, tenant_b, "America/New_York")
        insert_tariff(conn, tenant_b, flat_tariff(date(2026, 1, 1), 9.99, 1.11, currency="USD"))
        row = sample_row(
            hour, node, tenant_a, 1, soc=50, battery_w=0, pv_w=0, grid_w=1000, load_w=1000,
            interval_s=60, covered_s=60,
        )  # fmt: skip
        insert_samples(conn, [row])
        conn.execute("UPDATE nodes SET tenant_id = %s WHERE id = %s", (tenant_b, node))
    # Other tests' refreshes may have moved the watermark past that hour.
    materialize(database, hour, hour + timedelta(hours=1), CONTINUOUS_AGGREGATES[:2])
    with database.connect() as conn:
        rows = conn.execute(
            "SELECT tenant_id, timezone, currency, import_price, import_cost FROM energy_1h"
            " WHERE node_id = %s",
            (node,),
        ).fetchall()
    assert rows == [(tenant_a, "Europe/Warsaw", None, None, None)]
    role = f"moved_{tenant_a}"
    with as_role(database, role, create_tenant_role(database, tenant_a, role)) as conn:
        seen = conn.execute(
            "SELECT node_id, timezone, currency, import_price FROM energy_1h"
        ).fetchall()
        tariffs = conn.execute("SELECT count(*) FROM site_tariffs").fetchone()
    assert seen == [(node, "Europe/Warsaw", None, None)]
    assert tariffs == (0,)
