"""A tenant's role sees only its own rows, and only through tenant_view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from collector.inventory import record_inventory
from contract.inventory import NodeInventory
from tests.support.aggregates import materialize
from tests.support.fleet import create_node, create_tenant, unique
from tests.support.tenants import as_role, create_tenant_role

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
    "node_inventory",
    "node_inventory_history",
)
BASE_RELATIONS = (
    "telemetry",
    "telemetry_5m",
    "telemetry_1h",
    "telemetry_1d",
    # The integer aggregates behind the views above (migration 0026).
    "telemetry_5m_fixed",
    "telemetry_1h_fixed",
    "telemetry_1d_fixed",
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
    "node_inventory",
    "node_inventory_history",
    "money_1d",
    "money_1d_pending",
)


SEEDED_AT = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)


def _seed(database, tenant):
    node = create_node(database, tenant)
    ts = SEEDED_AT
    with database.connect() as conn:
        for i in range(3):
            conn.execute(
                "INSERT INTO telemetry (ts, node_id, tenant_id, seq, soc_percent, solar_w,"
                " grid_w, load_w, grid_price) VALUES (%s, %s, %s, %s, 50, 100, 10,"
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
        inventory = NodeInventory.model_validate(
            {
                "node_id": node,
                "ts": ts,
                "inverter": {"sunspec_model": 103},
                "agent": {"version": "1", "python": "3.11", "os": "Linux"},
            },
            strict=False,
        )
        with conn.cursor() as cur:
            record_inventory(cur, inventory, tenant, ts)
    return node


def test_tenant_role_sees_only_its_tenant_in_every_view(database):
    tenant_a, tenant_b = create_tenant(database), create_tenant(database)
    _node_a, node_b = _seed(database, tenant_a), _seed(database, tenant_b)
    # The seeded day's buckets, whole: the refresh policies' windows depend on the time of
    # day, and another test may have moved a watermark past them.
    materialize(database, SEEDED_AT - timedelta(days=1), SEEDED_AT + timedelta(days=1))
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


# What would tell a tenant how big the fleet is or how fast it grows: sizes, row counts,
# chunks and their time ranges, job runs, the WAL position (migration 0008).
FLEET_FIGURES = (
    "SELECT hypertable_size('public.telemetry')",
    "SELECT * FROM hypertable_detailed_size('public.telemetry')",
    "SELECT * FROM chunks_detailed_size('public.telemetry')",
    "SELECT approximate_row_count('public.telemetry')",
    "SELECT show_chunks('public.telemetry')",
    "SELECT * FROM hypertable_compression_stats('public.telemetry')",
    "SELECT * FROM _timescaledb_functions.hypertable_local_size('public', 'telemetry')",
    "SELECT _timescaledb_functions.get_approx_row_count('public.telemetry')",
    "SELECT * FROM _timescaledb_functions.relation_size('public.telemetry')",
    "SELECT count(*) FROM timescaledb_information.hypertables",
    "SELECT range_start FROM timescaledb_information.chunks",
    "SELECT total_runs FROM timescaledb_information.job_stats",
    "SELECT count(*) FROM _timescaledb_catalog.chunk",
    "SELECT range_start FROM _timescaledb_catalog.dimension_slice",
    "SELECT reltuples FROM pg_class WHERE relname = 'telemetry'",
    "SELECT relpages FROM pg_class WHERE relname = 'telemetry'",
    "SELECT * FROM pg_class WHERE relname = 'telemetry'",
    "SELECT n_live_tup FROM pg_stat_user_tables",
    "SELECT n_tup_ins FROM pg_stat_all_tables",
    "SELECT heap_blks_read FROM pg_statio_user_tables",
    "SELECT pg_stat_get_live_tuples('public.telemetry'::regclass)",
    "SELECT pg_total_relation_size('public.telemetry')",
    "SELECT pg_relation_size('public.telemetry')",
    "SELECT pg_database_size(current_database())",
    "SELECT pg_current_wal_lsn()",
    # The transaction counter a minute apart is the fleet's write rate (migration 0025).
    "SELECT txid_current()",
    "SELECT pg_current_xact_id()",
    "SELECT pg_current_snapshot()",
    "SELECT * FROM pg_control_checkpoint()",
    "SELECT * FROM pg_control_system()",
    "SELECT count(*) FROM pg_locks",
)


@pytest.mark.parametrize("sql", FLEET_FIGURES)
def test_tenant_role_cannot_read_fleet_wide_figures(database, sql):
    tenant = create_tenant(database)
    _seed(database, tenant)
    role = unique("tenant")
    password = create_tenant_role(database, tenant, role)
    with (
        as_role(database, role, password) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(sql)


def test_tenant_role_still_reads_the_schema_and_its_own_figures(database):
    """Names and definitions are open source; its own rows it may count."""
    tenant = create_tenant(database)
    node = _seed(database, tenant)
    role = unique("tenant")
    password = create_tenant_role(database, tenant, role)
    with as_role(database, role, password) as conn:
        names = conn.execute(
            "SELECT relname, relkind FROM pg_class WHERE relname IN ('telemetry', 'nodes')"
            " AND relnamespace = 'tenant_view'::regnamespace ORDER BY 1"
        ).fetchall()
        assert names == [("nodes", "v"), ("telemetry", "v")]
        counted = conn.execute(
            "SELECT node_id, count(*) FROM telemetry GROUP BY node_id"
        ).fetchall()
        assert counted == [(node, 3)]
        buckets = conn.execute(
            "SELECT count(DISTINCT time_bucket('1 hour', ts)) FROM telemetry"
        ).fetchone()
        assert buckets == (1,)


def test_a_moved_nodes_inventory_history_stays_with_the_tenant_it_was_recorded_under(database):
    """As every history does (docs/control-api.md, PATCH /nodes/{id}); its current
    inventory, like its status, goes with it."""
    tenant_a, tenant_b = create_tenant(database), create_tenant(database)
    node = _seed(database, tenant_a)
    with database.connect() as conn:
        conn.execute("UPDATE nodes SET tenant_id = %s WHERE id = %s", (tenant_b, node))
        # A change the node reports after the move is the new tenant's.
        later = NodeInventory.model_validate(
            {
                "node_id": node,
                "ts": SEEDED_AT + timedelta(days=1),
                "inverter": {"firmware": "2.0", "sunspec_model": 103},
                "agent": {"version": "1", "python": "3.11", "os": "Linux"},
            },
            strict=False,
        )
        with conn.cursor() as cur:
            record_inventory(cur, later, tenant_b, SEEDED_AT + timedelta(days=1))
    roles = {}
    for tenant in (tenant_a, tenant_b):
        role = unique("tenant")
        roles[tenant] = (role, create_tenant_role(database, tenant, role))

    def seen(tenant: int, view: str, column: str) -> list[object]:
        with as_role(database, *roles[tenant]) as conn:
            return [r[0] for r in conn.execute(f"SELECT {column} FROM tenant_view.{view}")]

    history = "node_inventory_history"
    assert seen(tenant_a, history, "changed_at") == [SEEDED_AT]
    assert seen(tenant_b, history, "changes->'inverter.firmware'->>'to'") == ["2.0"]
    assert seen(tenant_a, "node_inventory", "node_id") == []
    assert seen(tenant_b, "node_inventory", "firmware") == ["2.0"]
