"""Migrations run, re-run, downgrade and upgrade again on a fresh TimescaleDB."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command

from tests.support.services import (
    Database,
    alembic_config,
    downgrade,
    empty_database,
    migrate,
)

pytestmark = pytest.mark.integration

OBJECTS = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (n.nspname = 'public' AND c.relname IN ('tenants', 'nodes', 'node_status', 'telemetry',
       'optimizer_decisions', 'node_events', 'dead_letters', 'telemetry_5m', 'telemetry_1h',
       'telemetry_1d', 'tenant_roles', 'users', 'commands', 'command_events', 'node_configs',
       'audit_log', 'node_alerts', 'node_logs', 'node_reported_configs', 'tariffs',
       'site_zones', 'site_tariffs', 'energy_5m', 'energy_1h'))
   OR n.nspname = 'tenant_view' AND c.relkind = 'v'
"""
# 20 tables and aggregates, 4 analytics views, 13 tenant views.
EXPECTED_OBJECTS = 20 + 4 + 13
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
    assert _count(db, JOBS) == 8

    assert _count(db, TENANT_NODE_COLUMNS) == "id,tenant_id,display_name,enabled,created_at"
    (_, table), (_, view) = _rows(db, NODE_STATUS_COLUMNS)
    assert view == table
    assert "last_decision" not in table.split(",")

    # Re-running every statement over existing objects changes nothing and fails nothing.
    command.stamp(alembic_config(db), "base")
    migrate(db)
    assert _count(db, OBJECTS) == EXPECTED_OBJECTS
    assert _count(db, JOBS) == 8
    assert _count(db, TENANT_NODE_COLUMNS) == "id,tenant_id,display_name,enabled,created_at"

    downgrade(db, "base")
    assert _count(db, OBJECTS) == 0
    assert _count(db, JOBS) == 0

    migrate(db)
    assert _count(db, OBJECTS) == EXPECTED_OBJECTS
    assert _count(db, JOBS) == 8
