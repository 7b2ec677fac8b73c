"""Migrations run, re-run, downgrade and upgrade again on a fresh TimescaleDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command

from tests.support.aggregates import AGGREGATES_BEFORE_0026, materialize
from tests.support.fleet import create_node, create_tenant
from tests.support.services import (
    Database,
    alembic_config,
    downgrade,
    empty_database,
    migrate,
)
from tests.support.tariffs import insert_samples, sample_row

pytestmark = pytest.mark.integration

OBJECTS = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname = 'public' AND c.relname IN ('tenants', 'nodes', 'node_status', 'telemetry',
       'optimizer_decisions', 'node_events', 'dead_letters', 'telemetry_5m', 'telemetry_1h',
       'telemetry_1d', 'tenant_roles', 'users', 'commands', 'command_events', 'node_configs',
       'audit_log', 'node_alerts', 'node_logs', 'node_reported_configs', 'tariffs',
       'site_zones', 'site_tariffs', 'energy_5m', 'energy_1h', 'node_inventory',
       'node_inventory_history', 'money_1d', 'money_1d_pending', 'money_1d_state'))
   OR n.nspname = 'tenant_view' AND c.relkind = 'v'
"""
# 25 tables and aggregates, 4 analytics views, 18 tenant views.
EXPECTED_OBJECTS = 25 + 4 + 18
# What a tenant's role can read of the nodes table: never the command keys.
TENANT_NODE_COLUMNS = (
    "SELECT string_agg(column_name, ',' ORDER BY ordinal_position)"
    " FROM information_schema.columns"
    " WHERE table_schema = 'tenant_view' AND table_name = 'nodes'"
)
# The tenant view of node_status shows the table's columns, all of them and only them.
NODE_STATUS_COLUMNS = (
    "SELECT table_schema, string_agg(column_name, ',' ORDER BY ordinal_position)"
    " FROM information_schema.columns WHERE table_name = 'node_status'"
    " AND table_schema IN ('public', 'tenant_view') GROUP BY table_schema ORDER BY 1"
)
JOBS = "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000"


@pytest.fixture
def fresh_database() -> Iterator[Database]:
    with empty_database("migrations") as db:
        yield db


def _rows(db, sql):
    with db.connect() as conn:
        return conn.execute(sql).fetchall()


def _count(db, sql):
    with db.connect() as conn:
        return conn.execute(sql).fetchone()[0]


def test_upgrade_rerun_downgrade_and_upgrade_again(fresh_database):
    db = fresh_database
    migrate(db)
    assert _count(db, OBJECTS) == EXPECTED_OBJECTS
    assert _count(db, JOBS) == 11

    assert _count(db, TENANT_NODE_COLUMNS) == "id,tenant_id,display_name,enabled,created_at"
    (_, table), (_, view) = _rows(db, NODE_STATUS_COLUMNS)
    assert view == table
    assert "last_decision" not in table.split(",")

    # Re-running every statement over existing objects changes nothing and fails nothing.
    command.stamp(alembic_config(db), "base")
    migrate(db)
    assert _count(db, OBJECTS) == EXPECTED_OBJECTS
    assert _count(db, JOBS) == 11
    assert _count(db, TENANT_NODE_COLUMNS) == "id,tenant_id,display_name,enabled,created_at"

    downgrade(db, "base")
    assert _count(db, OBJECTS) == 0
    assert _count(db, JOBS) == 0

    migrate(db)
    assert _count(db, OBJECTS) == EXPECTED_OBJECTS
    assert _count(db, JOBS) == 11


def test_upgrading_across_0013_keeps_every_figure(fresh_database):
    """A hub at 0011 with a tenant and raw telemetry (no energy part) for the last 20 days and, from
    before its raw retention, 5-minute aggregates: after the upgrade the old history is
    kept as legacy_*, and the new aggregates hold the raw days (materialized, older than
    their policies reach) with energy estimated as before; running it again changes
    nothing."""
    db = fresh_database
    migrate(db, "0011")
    tenant = create_tenant(db)
    node = create_node(db, tenant)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with db.connect() as conn:
        for days_ago in (60, 20):  # one day beyond the raw retention, one within
            conn.execute(
                "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent,"
                " solar_power_w, grid_power_w, load_power_w, grid_price, grid_mode)"
                " SELECT t, %s, %s, %s * 1000 + n, 50, 1200, -200, 1000, 0.5, 'AUTO'"
                " FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute',"
                " interval '1 minute') WITH ORDINALITY AS g(t, n)",
                (node, tenant, days_ago, today - timedelta(days=days_ago),
                 today - timedelta(days=days_ago - 1)),
            )  # fmt: skip
    with db.connect() as conn:
        conn.autocommit = True
        conn.execute("CALL refresh_continuous_aggregate('telemetry_5m', NULL, now())")
        conn.execute("CALL refresh_continuous_aggregate('telemetry_1h', NULL, now())")
        # Retention dropped the older raw day; its aggregates remain.
        conn.execute("DELETE FROM telemetry WHERE ts < %s", (today - timedelta(days=30),))
    migrate(db, "0012")
    old_pv = _count(db, "SELECT sum(pv_kwh) FROM telemetry_1h")
    assert old_pv == pytest.approx(2 * 24 * 1.2)

    migrate(db)
    legacy_pv = _count(db, "SELECT sum(pv_kwh) FROM legacy_telemetry_1h")
    assert legacy_pv == pytest.approx(old_pv)
    new = _rows(db, "SELECT bucket::date, sum(pv_kwh), sum(grid_export_kwh), sum(load_kwh)"
                    " FROM telemetry_1d GROUP BY 1")  # fmt: skip
    [(day, *energies)] = new
    assert day == (today - timedelta(days=20)).date()
    # Stored in mWh (migration 0026): each 5-minute bucket's estimate to half a mWh.
    assert energies == pytest.approx([28.8, 4.8, 24.0], abs=288 * 0.5e-6)
    # The legacy tariff prices the old day's energy as the agents' prices did: 4.8 kWh
    # export at 0.55 or, 17:00-21:00 UTC, 0.85 (export then paid the import price).
    assert _count(db, "SELECT count(savings) FROM energy_1h") == 24
    revenue = _count(db, "SELECT sum(export_revenue) FROM energy_1h")
    assert revenue == pytest.approx(0.2 * (20 * 0.55 + 4 * 0.85), abs=1e-4)

    create_tenant(db)  # created since: no tariff until an admin sets one
    command.stamp(alembic_config(db), "0011")
    migrate(db)
    assert _rows(db, "SELECT tenant_id FROM tariffs") == [(tenant,)]
    assert _rows(db, "SELECT bucket::date, sum(pv_kwh), sum(grid_export_kwh), sum(load_kwh)"
                     " FROM telemetry_1d GROUP BY 1") == new  # fmt: skip
    assert _count(db, "SELECT sum(pv_kwh) FROM legacy_telemetry_1h") == pytest.approx(old_pv)


# Every figure the aggregates show, per bucket (views of the old names and units).
FIGURES = """
SELECT bucket, sample_count, soc_avg, soc_min, soc_max, battery_power_w, solar_power_w,
    grid_power_w, load_power_w, covered_s, pv_kwh, grid_import_kwh, grid_export_kwh, load_kwh,
    battery_charge_kwh, battery_discharge_kwh, gap_pv_kwh
FROM {view} ORDER BY bucket
"""
VIEWS = ("telemetry_5m", "telemetry_1h", "telemetry_1d")


def _figures(db) -> dict[str, list[tuple[Any, ...]]]:
    return {view: _rows(db, FIGURES.format(view=view)) for view in VIEWS}


def _assert_same_figures(got, expected) -> None:
    """Equal to what fixed-point storage keeps: mWh, ms, 0.1 % of SOC, whole watts."""
    for view in VIEWS:
        assert [row[:2] for row in got[view]] == [row[:2] for row in expected[view]], view
        for row, want in zip(got[view], expected[view], strict=True):
            _assert_same_row(row, want)


def _assert_same_row(row, want) -> None:
    assert row[:2] == want[:2]
    assert row[2:5] == pytest.approx(want[2:5], abs=0.05), row[0]
    assert row[5:9] == pytest.approx(want[5:9], abs=0.5), row[0]
    assert row[9] == pytest.approx(want[9], abs=5e-4 * row[1]), row[0]
    assert row[10:] == pytest.approx(want[10:], abs=5e-7 * row[1]), row[0]


def test_upgrading_across_0026_keeps_every_figure_and_counts_old_and_new_rows(fresh_database):
    """A hub at 0025 with float telemetry for a day 2 days ago and aggregates of a day 60
    days ago whose raw rows retention dropped: after 0026 the views show the same figures
    (the history copied into the integer aggregates, live aggregation starting where it
    did); samples written since in the integer columns and late float rows add up in one
    bucket; the downgrade gives the floats back with every figure."""
    db = fresh_database
    migrate(db, "0025")
    tenant = create_tenant(db)
    node = create_node(db, tenant)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def rows(start: datetime, minutes: range, seq: int) -> list[tuple[object, ...]]:
        return [
            sample_row(
                start + timedelta(minutes=m), node, tenant, seq + m, soc=40 + m % 7 / 3,
                battery_w=-333.3, pv_w=1234.56, grid_w=-400.2, load_w=500.7, interval_s=60.0,
                covered_s=59.99, gap=(0.1234, None, None),
            )
            for m in minutes
        ]  # fmt: skip

    old, recent = today - timedelta(days=60), today - timedelta(days=2)
    with db.connect() as conn:
        insert_samples(conn, rows(old, range(0, 24 * 60, 7), 0), fixed_point=False)
        insert_samples(conn, rows(recent, range(0, 24 * 60, 7), 10_000), fixed_point=False)
    materialize(db, old - timedelta(days=1), today, AGGREGATES_BEFORE_0026)
    with db.connect() as conn:
        conn.execute("DELETE FROM telemetry WHERE ts < %s", (today - timedelta(days=30),))
    before = _figures(db)
    assert len(before["telemetry_1d"]) == 2

    migrate(db)
    _assert_same_figures(_figures(db), before)
    assert _count(db, "SELECT count(*) FROM telemetry_5m_fixed") == len(before["telemetry_5m"])

    # Written since, as the collector writes them: into the integer columns, beside
    # the float rows of the same 5-minute bucket: 10:00-10:05 holds the float row of
    # 10:02 and new ones at 10:02:30 and 10:04:30.
    with db.connect() as conn:
        start = recent + timedelta(hours=10, seconds=30)
        insert_samples(conn, rows(start, range(2, 5, 2), 20_000))
    # A refresh by hand after a backfill, within raw retention (docs/runbook.md): what
    # changed is computed again, history older than the raw rows stays.
    materialize(db, recent - timedelta(days=1), today)
    after = _figures(db)
    bucket = next(r for r in after["telemetry_5m"] if r[0] == recent + timedelta(hours=10))
    assert bucket[1] == 3
    assert bucket[10] == pytest.approx(3 * 1234.56 * 59.99 / 3600 / 1000, abs=2e-6)
    assert bucket[6] == pytest.approx(1234.56, abs=0.5)
    day = next(r for r in after["telemetry_1d"] if r[0] == recent)
    assert day[1] == before["telemetry_1d"][1][1] + 2
    # The old day, beyond the raw rows, is as copied.
    _assert_same_row(after["telemetry_1d"][0], before["telemetry_1d"][0])

    downgrade(db, "0025")
    _assert_same_figures(_figures(db), after)
    assert _count(db, "SELECT count(*) FROM telemetry WHERE solar_power_w IS NULL") == 0
