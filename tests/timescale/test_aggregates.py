"""Continuous aggregates and the energy views hold the right energy, coverage, means and
money, and backfill corrects them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contract.fields import CONTINUOUS_AGGREGATES
from tests.support.aggregates import materialize
from tests.support.fleet import create_node, create_tenant
from tests.support.services import empty_database, migrate
from tests.support.tariffs import flat_tariff, insert_samples, insert_tariff, sample_row

pytestmark = pytest.mark.integration

# Night 0.80, day (12:00-24:00) 0.40; export always 0.10.
DAY_PERIOD = {"name": "day", "from_hour": 12, "to_hour": 24, "price": 0.40}
# kWh: each sample's energy is stored to the mWh (migration 0026), as the agent counts it.
HALF_MWH = 0.5e-6


def _day_start(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def _insert_minutes(conn, node_id, tenant, start, minutes, keep=lambda ts: True):
    """One sample a minute, each carrying its minute's energy. Night (00-12 UTC): no PV,
    1 kW load all imported, SOC 40. Day (12-24): 3 kW PV, 1 kW load, 0.5 kW into the
    battery, 1.5 kW exported, SOC 80."""
    rows = []
    for m in range(minutes):
        ts = start + timedelta(minutes=m)
        if not keep(ts):
            continue
        night = ts.hour < 12
        rows.append(
            sample_row(
                ts,
                node_id,
                tenant,
                m,
                soc=40.0 if night else 80.0,
                battery_w=0.0 if night else -500.0,
                pv_w=0.0 if night else 3000.0,
                grid_w=1000.0 if night else -1500.0,
                load_w=1000.0,
                interval_s=60.0,
                covered_s=60.0,
            )
        )
    insert_samples(conn, rows)


def refresh_all(conn):
    """Runs the three refresh policies in hierarchy order, as the scheduler would."""
    for view in CONTINUOUS_AGGREGATES:
        (job,) = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = %s",
            (view,),
        ).fetchone()
        conn.execute(f"CALL run_job({job})")


def _day(conn, node_id, day):
    return conn.execute(
        "SELECT sample_count, soc_avg, soc_min, soc_max, covered_s, pv_kwh, grid_import_kwh,"
        " grid_export_kwh, load_kwh, battery_charge_kwh, battery_discharge_kwh"
        " FROM telemetry_1d WHERE node_id = %s AND bucket = %s",
        (node_id, day),
    ).fetchone()


def _money(conn, node_id, day):
    return conn.execute(
        "SELECT count(*), sum(import_cost), sum(export_revenue), sum(grid_only_cost),"
        " sum(savings), min(coverage), max(currency) FROM energy_1h"
        " WHERE node_id = %s AND bucket >= %s AND bucket < %s",
        (node_id, day, day + timedelta(days=1)),
    ).fetchone()


def test_daily_energy_and_money_match_a_hand_computed_day(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    day = _day_start(2)
    with database.connect() as conn:
        insert_tariff(conn, tenant, flat_tariff(day.date(), 0.80, 0.10, periods=[DAY_PERIOD]))
        _insert_minutes(conn, node, tenant, day, 24 * 60)
        refresh_all(conn)
        got = _day(conn, node, day)
        money = _money(conn, node, day)
    # PV 3 kW x 12 h; import 1 kW x 12 h; export 1.5 kW x 12 h; load 1 kW x 24 h;
    # battery charged 0.5 kW x 12 h; every second of the day observed.
    assert got[0] == 1440
    assert got[1:] == pytest.approx(
        (60.0, 40.0, 80.0, 86400, 36, 12, 18, 24, 6, 0), abs=1440 * HALF_MWH
    )
    # Import 12 kWh at 0.80 = 9.60; export 18 kWh at 0.10 = 1.80; grid-only: 12 kWh at
    # 0.80 + 12 kWh at 0.40 = 14.40; savings 14.40 - (9.60 - 1.80) = 6.60.
    assert money[0] == 24
    assert money[1:5] == pytest.approx((9.6, 1.8, 14.4, 6.6), abs=1440 * HALF_MWH)
    assert money[5:] == (1.0, "PLN")


def test_energy_counts_what_samples_cover_not_how_many_there_are(database):
    """One sample after a gap covers nothing; a bucket with a single sample holds that
    sample's energy, not its power over the whole bucket; rollups weight means by count."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    hour = _day_start(3) + timedelta(hours=9)

    def row(minute, seconds, power, interval, covered):
        return sample_row(
            hour + timedelta(minutes=minute, seconds=seconds),
            node,
            tenant,
            minute * 100 + seconds,
            soc=50.0,
            battery_w=0.0,
            pv_w=power,
            grid_w=0.0,
            load_w=power,
            interval_s=interval,
            covered_s=covered,
        )

    with database.connect() as conn:
        # 09:00-09:05: twelve 5-second samples at 1 kW (one minute observed), then a
        # single sample at 4 kW at 09:07 after a 2-minute gap: it covers nothing.
        rows = [row(0, 5 * i, 1000.0, 5.0, 5.0) for i in range(12)]
        rows.append(row(7, 0, 4000.0, 125.0, 0.0))
        insert_samples(conn, rows)
        refresh_all(conn)
        fine = conn.execute(
            "SELECT sample_count, covered_s, pv_kwh, solar_power_w FROM telemetry_5m"
            " WHERE node_id = %s ORDER BY bucket",
            (node,),
        ).fetchall()
        (coarse,) = conn.execute(
            "SELECT sample_count, covered_s, pv_kwh, solar_power_w FROM telemetry_1h"
            " WHERE node_id = %s",
            (node,),
        ).fetchall()
        (coverage,) = conn.execute(
            "SELECT coverage FROM energy_1h WHERE node_id = %s", (node,)
        ).fetchone()
    assert fine == [
        (12, 60.0, pytest.approx(1000 * 60 / 3600 / 1000, abs=12 * HALF_MWH), 1000.0),
        (1, 0.0, 0.0, 4000.0),
    ]
    # The hour's mean power is the samples' mean (13 samples), not the buckets' (2500).
    assert coarse == (
        13,
        60.0,
        pytest.approx(1 / 60, abs=12 * HALF_MWH),
        pytest.approx((12 * 1000 + 4000) / 13, abs=0.5),  # whole watts
    )
    assert coverage == pytest.approx(60 / 3600)


def test_backfilled_samples_change_the_aggregates_after_refresh(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    day = _day_start(3)
    gap_start, gap_end = day + timedelta(hours=12), day + timedelta(hours=14)

    def in_gap(ts):
        return gap_start <= ts < gap_end

    with database.connect() as conn:
        _insert_minutes(conn, node, tenant, day, 24 * 60, keep=lambda ts: not in_gap(ts))
        refresh_all(conn)
        before = _day(conn, node, day)
        # The node was offline 12:00-14:00 and replays its buffer days later.
        _insert_minutes(conn, node, tenant, day, 24 * 60, keep=in_gap)
        stale = _day(conn, node, day)
        refresh_all(conn)
        after = _day(conn, node, day)
    assert before[0] == 1440 - 120
    assert before[5] == pytest.approx(30.0)  # 10 h of 3 kW PV
    assert stale == before  # materialized days change only when refreshed
    assert after[0] == 1440
    assert after[5] == pytest.approx(36.0)
    assert after[4] == pytest.approx(86400)


def test_samples_weeks_old_written_since_the_install_reach_every_aggregate():
    """Weeks of history written on a fresh install (an import, a backfill), beyond the
    refresh policies' windows, refreshed by hand: each aggregate rolls up every hour the
    finer one computed (migration 0026 carries over where changes to the finer one are
    logged)."""
    with empty_database("weeks_old") as db:
        migrate(db)
        tenant = create_tenant(db)
        node = create_node(db, tenant)
        first = _day_start(30)
        hours = int((_day_start(0) - first).total_seconds() // 3600)
        with db.connect() as conn:
            insert_samples(
                conn,
                [
                    sample_row(
                        first + timedelta(hours=h), node, tenant, h, soc=50.0, battery_w=0.0,
                        pv_w=0.0, grid_w=1000.0, load_w=1000.0, interval_s=3600.0,
                        covered_s=3600.0,
                    )
                    for h in range(hours)
                ],
            )  # fmt: skip
        materialize(db, first, _day_start(0))
        with db.connect() as conn:
            hourly = conn.execute(
                "SELECT count(*), sum(load_kwh) FROM telemetry_1h WHERE node_id = %s", (node,)
            ).fetchone()
            daily = conn.execute(
                "SELECT count(*), sum(load_kwh) FROM telemetry_1d WHERE node_id = %s", (node,)
            ).fetchone()
    assert hourly == (hours, pytest.approx(hours * 1.0))
    assert daily == (30, pytest.approx(hours * 1.0))


def test_buckets_without_a_tariff_keep_their_energy_and_have_no_money(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    day = _day_start(4)
    with database.connect() as conn:
        _insert_minutes(conn, node, tenant, day, 24 * 60)
        refresh_all(conn)
        got = conn.execute(
            "SELECT sum(pv_kwh), count(import_cost), count(savings), count(currency)"
            " FROM energy_1h WHERE node_id = %s",
            (node,),
        ).fetchone()
    assert got == (pytest.approx(36.0), 0, 0, 0)


def test_compressed_aggregates_hold_the_same_figures(database):
    """The aggregates' compression policies (migration 0016) compress what no refresh
    reaches any more; the energy, coverage and money read from them do not change."""
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    day = _day_start(80)  # in chunks old enough for both policies, whatever their bounds
    with database.connect() as conn:
        insert_tariff(conn, tenant, flat_tariff(day.date(), 0.80, 0.10, periods=[DAY_PERIOD]))
        _insert_minutes(conn, node, tenant, day, 24 * 60)
    materialize(database, day, day + timedelta(days=1), CONTINUOUS_AGGREGATES[:2])
    with database.connect() as conn:
        conn.autocommit = True
        before = _money(conn, node, day)
        for view in CONTINUOUS_AGGREGATES[:2]:
            (job,) = conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_compression' AND hypertable_name = %s",
                (view,),
            ).fetchone()
            conn.execute(f"CALL run_job({job})")
        compressed = conn.execute(
            "SELECT a.view_name, bool_and(c.is_compressed) FROM timescaledb_information.chunks c"
            " JOIN timescaledb_information.continuous_aggregates a"
            "   ON a.materialization_hypertable_name = c.hypertable_name"
            " WHERE c.range_start <= %s AND c.range_end > %s"
            " AND a.view_name = ANY (%s)"
            " GROUP BY 1 ORDER BY 1",
            (day, day, list(CONTINUOUS_AGGREGATES[:2])),
        ).fetchall()
        after = _money(conn, node, day)
    assert compressed == [("telemetry_1h_fixed", True), ("telemetry_5m_fixed", True)]
    assert after == before
    assert before[1:5] == pytest.approx((9.6, 1.8, 14.4, 6.6), abs=1440 * HALF_MWH)
