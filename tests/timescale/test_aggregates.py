"""Continuous aggregates hold the right energy and money, and backfill corrects them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.fleet import create_node, create_tenant

pytestmark = pytest.mark.integration

INSERT = """
INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent, battery_power_w,
    solar_power_w, grid_power_w, load_power_w, grid_price, grid_mode)
SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bigint[], %s::bigint[], %s::float8[],
    %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::float8[], %s::text[])
"""


def _day_start(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def _insert_minutes(conn, node_id, tenant, start, minutes, keep=lambda ts: True):
    """One sample a minute. Night (00-12 UTC): no PV, 1 kW load all imported at 0.80,
    SOC 40. Day (12-24): 3 kW PV, 1 kW load, 0.5 kW into the battery, 1.5 kW exported,
    price 0.40, SOC 80."""
    rows = []
    for m in range(minutes):
        ts = start + timedelta(minutes=m)
        if not keep(ts):
            continue
        night = ts.hour < 12
        rows.append(
            (
                ts,
                node_id,
                tenant,
                m,
                40.0 if night else 80.0,
                0.0 if night else -500.0,
                0.0 if night else 3000.0,
                1000.0 if night else -1500.0,
                1000.0,
                0.80 if night else 0.40,
                "AUTO",
            )
        )
    conn.execute(INSERT, [list(col) for col in zip(*rows, strict=True)])


def refresh_all(conn):
    """Runs the three refresh policies in hierarchy order, as the scheduler would."""
    for view in ("telemetry_5m", "telemetry_1h", "telemetry_1d"):
        (job,) = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = %s",
            (view,),
        ).fetchone()
        conn.execute(f"CALL run_job({job})")


def _day(conn, node_id, day):
    return conn.execute(
        "SELECT sample_count, soc_avg, soc_min, soc_max, pv_kwh, grid_import_kwh,"
        " grid_export_kwh, load_kwh, battery_in_kwh, battery_out_kwh, cost, grid_only_cost,"
        " savings FROM telemetry_1d WHERE node_id = %s AND bucket = %s",
        (node_id, day),
    ).fetchone()


def test_daily_energy_cost_and_savings_match_a_hand_computed_day(database):
    tenant = create_tenant(database)
    node = create_node(database, tenant)
    day = _day_start(2)
    with database.connect() as conn:
        _insert_minutes(conn, node, tenant, day, 24 * 60)
        refresh_all(conn)
        got = _day(conn, node, day)
        hourly = conn.execute(
            "SELECT count(*), sum(pv_kwh), sum(savings) FROM telemetry_1h"
            " WHERE node_id = %s AND bucket >= %s AND bucket < %s",
            (node, day, day + timedelta(days=1)),
        ).fetchone()
    # PV 3 kW x 12 h; import 1 kW x 12 h; export 1.5 kW x 12 h; load 1 kW x 24 h;
    # battery in 0.5 kW x 12 h. Cost 12 x 0.80 - 18 x 0.40 = 2.40;
    # grid-only 12 x 0.80 + 12 x 0.40 = 14.40; savings 12.00.
    expected = (1440, 60.0, 40.0, 80.0, 36.0, 12.0, 18.0, 24.0, 6.0, 0.0, 2.4, 14.4, 12.0)
    assert got[0] == expected[0]
    assert got[1:] == pytest.approx(expected[1:], abs=1e-9)
    assert hourly[0] == 24
    assert hourly[1:] == pytest.approx((36.0, 12.0))


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
    assert before[4] == pytest.approx(30.0)  # 10 h of 3 kW PV
    assert stale == before  # materialized days change only when refreshed
    assert after[0] == 1440
    assert after[4] == pytest.approx(36.0)
    assert after[12] == pytest.approx(12.0)
