"""A tenant's role sees only its own rows, and only through tenant_view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.fleet import create_node, create_tenant, unique
from tests.support.tenants import as_role, create_tenant_role
from tests.timescale.test_aggregates import refresh_all

pytestmark = pytest.mark.integration

TENANT_VIEWS = (
    "nodes",
    "node_status",
    "telemetry",
    "telemetry_5m",
    "telemetry_1h",
    "telemetry_1d",
    "optimizer_decisions",
    "node_events",
    "commands",
)
BASE_RELATIONS = (
    "telemetry",
    "telemetry_5m",
    "telemetry_1h",
    "telemetry_1d",
    "nodes",
    "node_status",
    "tenants",
    "tenant_roles",
    "dead_letters",
    "node_events",
    "optimizer_decisions",
    "commands",
    "users",
    "audit_log",
    "node_alerts",
)


def _seed(database, tenant):
    node = create_node(database, tenant)
    ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    with database.connect() as conn:
        for i in range(3):
            conn.execute(
                "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent, solar_power_w,"
                " grid_power_w, load_power_w, grid_price) VALUES (%s, %s, %s, %s, 50, 100, 10,"
                " 110, 0.5)",
                (ts + timedelta(minutes=i), node, tenant, i),
            )
        conn.execute("INSERT INTO node_status (node_id, state) VALUES (%s, 'online')", (node,))
        conn.execute(
            "INSERT INTO node_events (ts, node_id, tenant_id, state, source)"
            " VALUES (%s, %s, %s, 'online', 'status')",
            (ts, node, tenant),
        )
        conn.execute(
            "INSERT INTO optimizer_decisions (ts, node_id, tenant_id, decision)"
            " VALUES (%s, %s, %s, 'hold')",
            (ts, node, tenant),
        )
        conn.execute(
            "INSERT INTO commands (id, node_id, tenant_id, type, params, state, issued_at,"
            " expires_at) VALUES (%s, %s, %s, 'RESTART_AGENT', '{}', 'sent', %s, %s)",
            (unique("cmd"), node, tenant, ts, ts + timedelta(minutes=5)),
        )
    return node


def test_tenant_role_sees_only_its_tenant_in_every_view(database):
    tenant_a, tenant_b = create_tenant(database), create_tenant(database)
    _node_a, node_b = _seed(database, tenant_a), _seed(database, tenant_b)
    with database.connect() as conn:
        refresh_all(conn)
    role_b = unique("tenant_b")
    password = create_tenant_role(database, tenant_b, role_b)

    with as_role(database, role_b, password) as conn:
        for view in TENANT_VIEWS:
            column = "id" if view == "nodes" else "node_id"
            seen = {r[0] for r in conn.execute(f"SELECT DISTINCT {column} FROM tenant_view.{view}")}
            assert seen == {node_b}, f"tenant_view.{view} showed {seen}"


@pytest.mark.parametrize("relation", BASE_RELATIONS)
def test_tenant_role_cannot_read_base_tables_or_aggregates(database, relation):
    tenant = create_tenant(database)
    role = unique("tenant")
    password = create_tenant_role(database, tenant, role)
    with (
        as_role(database, role, password) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"SELECT 1 FROM public.{relation} LIMIT 1")


def test_role_function_is_idempotent_and_refuses_to_remap(database):
    tenant_a, tenant_b = create_tenant(database), create_tenant(database)
    role = unique("tenant")
    create_tenant_role(database, tenant_a, role)
    create_tenant_role(database, tenant_a, role)
    with database.connect() as conn:
        mapped = conn.execute(
            "SELECT tenant_id FROM tenant_roles WHERE role_name = %s", (role,)
        ).fetchall()
        assert mapped == [(tenant_a,)]
        with pytest.raises(psycopg.errors.RaiseException, match="already belongs"):
            conn.execute("SELECT tenant_view.ensure_tenant_role(%s, %s)", (tenant_b, role))


def test_a_tenant_role_resolves_unqualified_names_to_its_views(database):
    """Dashboards name relations unqualified; a tenant's login resolves them to its views."""
    tenant = create_tenant(database)
    node = _seed(database, tenant)
    _seed(database, create_tenant(database))
    role = unique("tenant")
    password = create_tenant_role(database, tenant, role)
    with as_role(database, role, password) as conn:
        assert [r[0] for r in conn.execute("SELECT DISTINCT node_id FROM commands")] == [node]
        assert [r[0] for r in conn.execute("SELECT id FROM nodes")] == [node]
